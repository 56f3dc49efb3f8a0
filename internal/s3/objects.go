package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// PutFile uploads the file at path as bucket/key in one PUT (S3 takes up
// to 5 GiB that way). The file is read twice: once to sign its SHA-256,
// once to send it, so that nothing of it is held in memory.
func (c *Client) PutFile(ctx context.Context, bucket, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("hashing %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	resp, err := c.doStream(ctx, http.MethodPut, bucket, key, nil, io.LimitReader(f, n), n, hex.EncodeToString(h.Sum(nil)))
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// GetFile downloads bucket/key into the file at path (created 0600,
// replaced), refusing objects larger than limit bytes. It returns the
// object's size.
func (c *Client) GetFile(ctx context.Context, bucket, key, path string, limit int64) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, bucket, key, nil, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return 0, fmt.Errorf("object %s is %d bytes, more than %d", key, resp.ContentLength, limit)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = fmt.Errorf("object %s is more than %d bytes", key, limit)
	}
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("downloading %s: %w", key, err)
	}
	return n, nil
}

// DeleteObject removes bucket/key; a missing key is not an error (S3
// answers 204 either way).
func (c *Client) DeleteObject(ctx context.Context, bucket, key string) error {
	resp, err := c.do(ctx, http.MethodDelete, bucket, key, nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// maxListPages bounds a listing: 1000 keys a page.
const maxListPages = 100

// ListKeys returns the keys under prefix (ListObjectsV2, page by page, at
// most maxListPages pages).
func (c *Client) ListKeys(ctx context.Context, bucket, prefix string) ([]string, error) {
	var keys []string
	token := ""
	for page := 0; page < maxListPages; page++ {
		q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		resp, err := c.do(ctx, http.MethodGet, bucket, "", q, nil)
		if err != nil {
			return nil, err
		}
		var out struct {
			Contents []struct {
				Key string `xml:"Key"`
			} `xml:"Contents"`
			IsTruncated           bool   `xml:"IsTruncated"`
			NextContinuationToken string `xml:"NextContinuationToken"`
		}
		err = xml.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("listing %s/%s: %w", bucket, prefix, err)
		}
		for _, c := range out.Contents {
			keys = append(keys, c.Key)
		}
		if !out.IsTruncated || out.NextContinuationToken == "" {
			return keys, nil
		}
		token = out.NextContinuationToken
	}
	return keys, fmt.Errorf("listing %s/%s: more than %d pages", bucket, prefix, maxListPages)
}
