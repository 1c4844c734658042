package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/internal/version"
)

// Headers of a webhook request.
const (
	HeaderSignature = "X-Pullwise-Signature" // sha256=HEX, when a secret is set
	HeaderEvent     = "X-Pullwise-Event"     // the event's kind
	HeaderDelivery  = "X-Pullwise-Delivery"  // the event's seq: the same on a retry
)

// webhook POSTs each event to a URL, one request per event.
type webhook struct {
	s      config.WebhookSettings
	client *http.Client
}

func newWebhook(s config.WebhookSettings) *webhook {
	return &webhook{s: s, client: &http.Client{Timeout: s.RequestTimeout()}}
}

// send posts the events in order, stopping at the first the receiver did
// not take. A 4xx answer other than 408 and 429 refuses the event for
// good: it is logged by the caller's count and skipped, so one event the
// receiver cannot parse does not block the rest.
func (w *webhook) send(ctx context.Context, es []events.Event) (int, error) {
	for i, e := range es {
		if err := w.post(ctx, e); err != nil {
			if refused, ok := err.(refusedError); ok {
				return i + 1, refused // skipped; the caller goes on
			}
			return i, err
		}
	}
	return len(es), nil
}

// refusedError is an event the receiver refused for good.
type refusedError struct{ status string }

func (r refusedError) Error() string {
	return "the receiver refused the event for good (" + r.status + "); it is skipped"
}

func (w *webhook) post(ctx context.Context, e events.Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return refusedError{status: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.s.URL, bytes.NewReader(body))
	if err != nil {
		return refusedError{status: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pullwise/"+version.Get().Version)
	req.Header.Set(HeaderEvent, string(e.Kind))
	req.Header.Set(HeaderDelivery, strconv.FormatUint(e.Seq, 10))
	for k, v := range w.s.Headers {
		req.Header.Set(k, v)
	}
	if w.s.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(w.s.Secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests:
		return refusedError{status: resp.Status}
	}
	return fmt.Errorf("%s answered %s", w.s.URL, resp.Status)
}

func (w *webhook) close() { w.client.CloseIdleConnections() }
