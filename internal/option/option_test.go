package option

import (
	"strings"
	"testing"
	"time"
)

type thing struct {
	timeout time.Duration
	name    string
	hook    func()
	size    int64
}

func TestSet(t *testing.T) {
	var nilHook func()
	var nilPtr *thing
	for _, tc := range []struct {
		opt  func(*thing) error
		want string // "" for accepted
	}{
		{Set("WithTimeout", time.Second, func(x *thing) *time.Duration { return &x.timeout }, Positive[time.Duration]), ""},
		{Set("WithTimeout", -time.Second, func(x *thing) *time.Duration { return &x.timeout }, Positive[time.Duration]), "WithTimeout: -1s is not positive"},
		{Set("WithTimeout", 0, func(x *thing) *time.Duration { return &x.timeout }, Positive[time.Duration]), "WithTimeout: 0s is not positive"},
		{Set("WithSize", int64(-2), func(x *thing) *int64 { return &x.size }, NotNegative[int64]), "WithSize: -2 is negative"},
		{Set("WithSize", int64(0), func(x *thing) *int64 { return &x.size }, NotNegative[int64]), ""},
		{Set("WithName", "", func(x *thing) *string { return &x.name }, NotEmpty), "WithName: empty"},
		{Set("WithName", "", func(x *thing) *string { return &x.name }, nil), ""},
		{Set("WithHook", nilHook, func(x *thing) *func() { return &x.hook }, NotNil[func()]), "WithHook: nil"},
		{Set("WithHook", func() {}, func(x *thing) *func() { return &x.hook }, NotNil[func()]), ""},
		{Set("WithAny", any(nilPtr), func(x *thing) *any { var a any; return &a }, NotNil[any]), "WithAny: nil"},
	} {
		var x thing
		err := tc.opt(&x)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("refused: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v; want %q", err, tc.want)
		}
	}
	var x thing
	if err := Set("WithTimeout", 3*time.Second, func(x *thing) *time.Duration { return &x.timeout }, Positive[time.Duration])(&x); err != nil || x.timeout != 3*time.Second {
		t.Fatalf("not set: %v %v", x.timeout, err)
	}
}
