package app

import (
	"reflect"
	"testing"
	"time"
)

// Equal looks at every field of ImageInfo: a field it missed would leave
// a stale part in the status file. Each field set alone must make two
// reports unequal, and copies of pointed-to values must not.
func TestImageInfoEqualSeesEveryField(t *testing.T) {
	at := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	base := ImageInfo{}
	rt := reflect.TypeOf(base)
	for i := 0; i < rt.NumField(); i++ {
		changed := base
		f := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Pointer:
			v := reflect.New(f.Type().Elem())
			switch p := v.Interface().(type) {
			case *time.Time:
				*p = at
			case *DecisionInfo:
				p.Reason = "x"
			case *DownloadProgress:
				p.DoneBytes = 1
			default:
				t.Fatalf("field %s: a pointer type the test does not know; teach Equal and this test", rt.Field(i).Name)
			}
			f.Set(v)
		default:
			t.Fatalf("field %s of kind %s: teach Equal and this test", rt.Field(i).Name, f.Kind())
		}
		if base.Equal(changed) || changed.Equal(base) {
			t.Errorf("field %s changed, yet Equal says the reports are the same", rt.Field(i).Name)
		}
	}
	a := ImageInfo{LastCheck: &at, Decision: &DecisionInfo{Reason: "r", At: at}, Download: &DownloadProgress{DoneBytes: 3}}
	at2, d2, p2 := at, *a.Decision, *a.Download
	if b := (ImageInfo{LastCheck: &at2, Decision: &d2, Download: &p2}); !a.Equal(b) {
		t.Error("copies of the same values are not Equal")
	}
}
