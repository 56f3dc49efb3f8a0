package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ago says how long before now t was, the way people say it: "just now",
// "5 minutes ago", "3 days ago"; dates beyond two months. A zero t is "-".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < 2*time.Second: // includes small clock skew into the future
		return "just now"
	case d < time.Minute:
		return plural(int(d/time.Second), "second")
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour")
	case d < 14*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day")
	case d < 60*24*time.Hour:
		return plural(int(d/(7*24*time.Hour)), "week")
	}
	return t.In(now.Location()).Format("2006-01-02")
}

// formatLabels prints labels as k=v pairs sorted by key, comma-separated.
func formatLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// table is an aligned table for list commands: a header line, then rows,
// with tabs between columns.
type table struct {
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(header string) *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 3, ' ', 0)
	fmt.Fprintln(t.tw, header)
	return t
}

// row adds one line; format separates the columns with \t and ends
// without a newline.
func (t *table) row(format string, args ...any) { fmt.Fprintf(t.tw, format+"\n", args...) }

// write prints the table to w, without the padding tabwriter leaves after
// a short last column.
func (t *table) write(w io.Writer) error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(t.buf.String()) {
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	return nil
}
