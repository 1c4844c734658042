// Package option builds the functional options of pullwise's constructors
// (see docs/RATIONALE.md, "One constructor convention"): an option sets one
// field of what is being made, after a check that can refuse the value, so
// a value that cannot work is an error when the constructor runs, naming
// the option.
package option

import (
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Set returns the option that stores v in the field dst picks out of a C,
// unless check (nil: none) refuses v; the error then starts with name.
func Set[C, T any](name string, v T, dst func(*C) *T, check func(T) error) func(*C) error {
	return func(c *C) error {
		if check != nil {
			if err := check(v); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		*dst(c) = v
		return nil
	}
}

// Number is what Positive and NotNegative check.
type Number interface {
	~int | ~int64 | ~uint32 | ~uint | ~float64
}

// Positive refuses zero and below.
func Positive[T Number](v T) error {
	if v <= 0 {
		return fmt.Errorf("%v is not positive", show(v))
	}
	return nil
}

// NotNegative refuses below zero.
func NotNegative[T Number](v T) error {
	if v < 0 {
		return fmt.Errorf("%v is negative", show(v))
	}
	return nil
}

// NotEmpty refuses the empty string.
func NotEmpty(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	return nil
}

// NotNil refuses a nil pointer, function, map, channel, slice or interface
// (an interface holding a nil pointer too).
func NotNil[T any](v T) error {
	rv := reflect.ValueOf(any(v))
	if !rv.IsValid() {
		return errors.New("nil")
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Interface, reflect.Map, reflect.Chan, reflect.Slice:
		if rv.IsNil() {
			return errors.New("nil")
		}
	}
	return nil
}

// show prints a duration as one ("-1s"), whatever its type parameter.
func show[T Number](v T) any {
	if d, ok := any(v).(time.Duration); ok {
		return d
	}
	return v
}
