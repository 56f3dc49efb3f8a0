package bucket

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Source{Bucket: "my-bucket.1", Prefix: "data/2024", Endpoint: "https://s3.eu-west-1.amazonaws.com", Region: "eu-west-1"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	bad := []Source{
		{Bucket: "UP", Endpoint: ok.Endpoint},
		{Bucket: "a", Endpoint: ok.Endpoint},
		{Bucket: "b,allow_root", Endpoint: ok.Endpoint},
		{Bucket: "data", Prefix: "a/../b", Endpoint: ok.Endpoint},
		{Bucket: "data", Prefix: "a,b", Endpoint: ok.Endpoint},
		{Bucket: "data", Endpoint: ""},
		{Bucket: "data", Endpoint: "ftp://x"},
		{Bucket: "data", Endpoint: "http://h/x"},
		{Bucket: "data", Endpoint: "http://u:p@h"},
		{Bucket: "data", Endpoint: "http://h,passwd_file=/etc/shadow"},
		{Bucket: "data", Endpoint: ok.Endpoint, Region: "us,east"},
	}
	for _, s := range bad {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v; want ErrInvalid", s, err)
		}
	}
}

func TestCredentials(t *testing.T) {
	good := Credentials{AccessKeyID: "AKIA123", SecretAccessKey: "s/e+c=r"}
	if err := ValidateCredentials(good); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Credentials{{}, {AccessKeyID: "a"}, {AccessKeyID: "a:b", SecretAccessKey: "s"}, {AccessKeyID: "a", SecretAccessKey: "s\nx"}} {
		if err := ValidateCredentials(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateCredentials(%+v) = %v; want ErrInvalid", c, err)
		}
	}
	path := filepath.Join(t.TempDir(), "0.cred")
	if err := WriteCredentials(path, good); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v; want 0600", fi.Mode().Perm())
	}
	if got, err := ReadCredentials(path); err != nil || got != good {
		t.Errorf("ReadCredentials = %+v, %v", got, err)
	}
}
