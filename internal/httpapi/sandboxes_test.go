package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestSandboxListIsWrittenAsTheWireType: the list written a row at a time
// is the api.SandboxList json.Marshal would write, give or take
// whitespace, with the next page's token after the last row when there
// are more, for an empty page, one row and several.
func TestSandboxListIsWrittenAsTheWireType(t *testing.T) {
	at := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	infos := []sandbox.Info{
		{ID: "a", Status: sandbox.StatusRunning, Image: "host", Runtime: "crun", CreatedAt: at, LastUsedAt: at,
			IdleDeadline: at.Add(time.Hour), Config: sandbox.Config{Labels: map[string]string{"k": "v <&>"}}},
		{ID: "acme/b", Status: sandbox.StatusSleeping, Image: "acme/py", Runtime: "gvisor", StatusReason: "idle for 10m0s"},
		{ID: "c", Status: sandbox.StatusStopped, Address: "10.0.0.2", HostUIDBase: 100000},
	}
	for _, tc := range []struct {
		name  string
		infos []sandbox.Info
		more  bool
	}{
		{"empty", nil, false},
		{"one", infos[:1], false},
		{"several with more", infos, true},
		{"several, last page", infos, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := writeSandboxList(rec, func(each func(sandbox.Info)) bool {
				for _, inf := range tc.infos {
					each(inf)
				}
				return tc.more
			})
			if err != nil {
				t.Fatal(err)
			}
			want := api.SandboxList{Sandboxes: []api.Sandbox{}}
			for _, inf := range tc.infos {
				want.Sandboxes = append(want.Sandboxes, toWire(inf))
			}
			if tc.more {
				want.NextPageToken = encodePageToken(tc.infos[len(tc.infos)-1].ID)
			}
			wantJSON, _ := json.Marshal(want)
			var got bytes.Buffer
			if err := json.Compact(&got, rec.Body.Bytes()); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, rec.Body.Bytes())
			}
			if diff := cmp.Diff(string(wantJSON), got.String()); diff != "" {
				t.Errorf("list (-json.Marshal +written):\n%s", diff)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" || rec.Code != 200 {
				t.Errorf("status %d, Content-Type %q", rec.Code, ct)
			}
		})
	}
}

// TestListRowIsTheWireType: a listRow encodes as its api.Sandbox does,
// byte for byte, with every field set (a field added to api.Sandbox is
// set too, so one added after CreatedAt, and so out of place in the row,
// fails here), with times in other zones and the zero time, and a time
// MarshalJSON refuses fails the row alike.
func TestListRowIsTheWireType(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -8*3600)}
	for i, at := range []time.Time{
		time.Date(2026, 12, 6, 15, 4, 5, 123456789, zones[0]),
		time.Date(1999, 1, 2, 3, 4, 5, 0, zones[1]),
		time.Date(2030, 6, 7, 8, 9, 10, 500000000, zones[2]),
		{},
	} {
		var s api.Sandbox
		fillForTest(reflect.ValueOf(&s).Elem(), at)
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var row listRow
		row.set(s)
		got, err := json.Marshal(&row)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("time %d: row (-api.Sandbox +listRow):\n%s", i, diff)
		}
	}
	var s api.Sandbox
	s.LastUsedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	var row listRow
	row.set(s)
	if _, err := json.Marshal(&row); err == nil {
		t.Error("a row with a time past year 9999 encoded; json.Marshal of its api.Sandbox fails")
	}
}

// fillForTest sets every field under v, times to at.
func fillForTest(v reflect.Value, at time.Time) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(at))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s <&> \u2028 \"q\"")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillForTest(v.Elem(), at)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillForTest(v.Index(0), at)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillForTest(k, at)
		fillForTest(e, at)
		v.SetMapIndex(k, e)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillForTest(v.Field(i), at)
			}
		}
	}
}

// BenchmarkWriteSandboxList: what writing a page of 10 allocates (run
// with -benchmem): what every page costs the daemon, which with
// thousands of sandboxes is paid in page faults (bench/results/scale.txt).
func BenchmarkWriteSandboxList(b *testing.B) {
	at := time.Date(2026, 12, 6, 15, 0, 0, 123456789, time.UTC)
	inf := sandbox.Info{ID: "idle-1", Status: sandbox.StatusRunning, Image: "host", Runtime: "crun", Address: "10.250.0.2",
		Gateway: "10.250.0.1", CreatedAt: at, LastUsedAt: at, StatusChangedAt: at, IdleDeadline: at.Add(time.Hour), HostUIDBase: 1000000}
	w := discardResponse{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.header)
		writeSandboxList(w, func(each func(sandbox.Info)) bool {
			for range 10 {
				each(inf)
			}
			return true
		})
	}
}

// discardResponse is a ResponseWriter that keeps nothing written.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header         { return d.header }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}

// WriteString is there because net/http's ResponseWriter has it, which
// io.WriteString then uses without allocating.
func (d discardResponse) WriteString(s string) (int, error) { return len(s), nil }
