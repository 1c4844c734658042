package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/events"
	"github.com/pullwise/pullwise/host/pull"
)

// ErrNotRunning means no agent answers on the state directory's socket.
var ErrNotRunning = errors.New("the pullwise agent is not running")

// ErrPermission means the agent's socket exists but this user may not open
// it (it is mode 0600, for root).
var ErrPermission = errors.New("permission denied")

// Client talks to a running agent over its socket.
type Client struct {
	sock string
	http *http.Client
}

// NewClient returns a client for the agent whose state directory is dir.
func NewClient(dir string) *Client {
	sock := filepath.Join(dir, SocketName)
	return &Client{sock: sock, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

func (c *Client) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://pullwise"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w on the agent's socket %s: it is for root (run the command as root, or with sudo)", ErrPermission, c.sock)
		}
		return nil, fmt.Errorf("%w (no answer on %s): %s", ErrNotRunning, c.sock, notRunningHint("/proc", filepath.Dir(c.sock), unitPaths()))
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return nil, errors.New(e.Error)
	}
	return resp, nil
}

// Status returns the agent's status and info report.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	resp, err := c.do(ctx, http.MethodGet, "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// App returns one app's report.
func (c *Client) App(ctx context.Context, appName string) (app.AppInfo, error) {
	var st app.AppInfo
	resp, err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(appName))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// LogSince is where the app's output since t starts in its log files.
func (c *Client) LogSince(ctx context.Context, appName string, t time.Time) (LogPosition, error) {
	var pos LogPosition
	resp, err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(appName)+"/logs/since?t="+url.QueryEscape(t.UTC().Format(time.RFC3339Nano)))
	if err != nil {
		return pos, err
	}
	defer resp.Body.Close()
	return pos, json.NewDecoder(resp.Body).Decode(&pos)
}

// EventQuery selects events: the fields of events.Filter the API takes,
// and Follow to keep streaming.
type EventQuery struct {
	App    string // uuid or display name
	Since  time.Time
	Kinds  []string
	Follow bool
}

// Events calls each for every event the query selects, oldest first; with
// Follow it keeps calling as events come, until ctx ends.
func (c *Client) Events(ctx context.Context, q EventQuery, each func(events.Event) error) error {
	v := url.Values{}
	if q.App != "" {
		v.Set("app", q.App)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	for _, k := range q.Kinds {
		v.Add("kind", k)
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/events?"+v.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var e events.Event
		if err := dec.Decode(&e); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading events: %w", err)
		}
		if err := each(e); err != nil {
			return err
		}
	}
}

// DryRun reports what a refresh of the app would change.
func (c *Client) DryRun(ctx context.Context, appName string) ([]app.ImageCheck, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(appName)+"/dry-run")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []app.ImageCheck
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// OpWatch receives what happens while an operation is waited for. Either
// func may be nil.
type OpWatch struct {
	// Progress is each download update.
	Progress func(pull.Progress)
	// Stopping is the app's process being stopped (events.Stopping: until
	// when it has before SIGKILL).
	Stopping func(events.Event)
}

// Op increases an app's refresh, restart or purge counter. With wait it
// returns the app's state once the agent has acted, telling watch what
// happens on the way; without, it returns at once (nil info).
func (c *Client) Op(ctx context.Context, appName, op string, wait bool, watch OpWatch) (*app.AppInfo, error) {
	path := "/v1/apps/" + url.PathEscape(appName) + "/" + op
	if wait {
		path += "?wait=1"
	}
	resp, err := c.do(ctx, http.MethodPost, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !wait {
		io.Copy(io.Discard, resp.Body)
		return nil, nil
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Progress *pull.Progress `json:"progress"`
			Stopping *events.Event  `json:"stopping"`
			Result   *app.AppInfo   `json:"result"`
			Error    string         `json:"error"`
			Queued   bool           `json:"queued"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("agent answer: %w", err)
		}
		switch {
		case line.Progress != nil:
			if watch.Progress != nil {
				watch.Progress(*line.Progress)
			}
		case line.Stopping != nil:
			if watch.Stopping != nil {
				watch.Stopping(*line.Stopping)
			}
		case line.Queued:
			return line.Result, &QueuedError{Op: op, Err: errors.New(line.Error)}
		case line.Error != "":
			return line.Result, errors.New(line.Error)
		default:
			return line.Result, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the agent closed the connection before answering")
}

// QueuedError is an action the agent could not carry out yet because
// containerd does not answer: it is kept (the counter is increased and
// persisted) and carried out when containerd answers again.
type QueuedError struct {
	Op  string
	Err error // what containerd's client said
}

func (e *QueuedError) Error() string {
	return fmt.Sprintf("containerd is unreachable: the %s is queued, and the agent carries it out when containerd answers again (is containerd running? `systemctl status containerd`)", e.Op)
}

func (e *QueuedError) Unwrap() error { return e.Err }
