package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
)

func TestWriteJSONStringBodyMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\t\r\n", "€ ünï <&>", "\u2028"} {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		w.WriteByte('"')
		writeJSONStringBody(w, []byte(s))
		w.WriteByte('"')
		w.Flush()
		var back string
		if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back != s {
			t.Errorf("%q: %s -> %q, %v", s, buf.Bytes(), back, err)
		}
	}
}
