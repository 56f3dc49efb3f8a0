package daemon

import "testing"

// TestParseBackupStore takes s3://BUCKET[/PREFIX] and nothing else.
func TestParseBackupStore(t *testing.T) {
	for _, tc := range []struct {
		raw, bucket, prefix string
		ok                  bool
	}{
		{"s3://backups", "backups", "", true},
		{"s3://backups/team-a/x", "backups", "team-a/x", true},
		{"s3://backups/team-a/", "backups", "team-a", true},
		{"https://backups", "", "", false},
		{"s3://", "", "", false},
		{"s3://Bad_Bucket", "", "", false},
		{"s3://backups/../x", "", "", false},
		{"s3://key:secret@backups", "", "", false},
		{"s3://backups?x=1", "", "", false},
	} {
		src, err := parseBackupStore(tc.raw)
		if (err == nil) != tc.ok || src.Bucket != tc.bucket || src.Prefix != tc.prefix {
			t.Errorf("parseBackupStore(%q) = %+v, %v; want bucket %q prefix %q ok %v", tc.raw, src, err, tc.bucket, tc.prefix, tc.ok)
		}
	}
}
