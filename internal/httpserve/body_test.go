package httpserve

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadAllIsIOReadAll: readAll reads what io.ReadAll of the body
// limited to limit does, whatever the size it is told (a Content-Length
// the body may not keep to), a byte at a time or all at once.
func TestReadAllIsIOReadAll(t *testing.T) {
	const limit = 100
	for _, n := range []int{0, 1, 10, 60, 99, 100, 101, 300} {
		body := strings.Repeat("x", n)
		for _, size := range []int64{-1, 0, 1, int64(n) - 1, int64(n), int64(n) + 1, limit - 1, limit, 500} {
			for _, oneByte := range []bool{false, true} {
				reader := func() io.Reader {
					if oneByte {
						return iotest.OneByteReader(strings.NewReader(body))
					}
					return strings.NewReader(body)
				}
				want, _ := io.ReadAll(io.LimitReader(reader(), limit))
				got, err := readAll(reader(), limit, size)
				if err != nil || string(got) != string(want) {
					t.Errorf("body %d bytes, size %d, a byte at a time %v: read %d bytes, %v; want %d", n, size, oneByte, len(got), err, len(want))
				}
			}
		}
	}
}
