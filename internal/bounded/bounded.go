// Package bounded reads whole files and streams that may be hostile or
// corrupt without trusting their size: never more than a bound (plus one
// byte, to tell "exactly the bound" from "more"). It owns only reading;
// what a caller does with an oversized input is the caller's.
package bounded

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge: the input holds more than the bound.
var ErrTooLarge = errors.New("larger than its bound")

// Read reads r to its end, at most max bytes. More is an error wrapping
// ErrTooLarge that names what ("the Dockerfile"), with the first max bytes
// returned beside it for a caller that keeps what fits.
func Read(r io.Reader, max int64, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return data[:max], fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, what, max)
	}
	return data, nil
}

// ReadFile is Read of the file at path, named by its path.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f, max, path)
}
