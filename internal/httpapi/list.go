package httpapi

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Bounds of a list query.
const (
	maxListLabels     = 16
	maxLabelBytes     = 256
	maxPageTokenBytes = 256
	pageTokenPrefix   = "p1."
)

// parseListQuery reads and bounds the query of GET /v1/sandboxes.
func parseListQuery(r *http.Request) (sandbox.ListQuery, *api.Error) {
	v := r.URL.Query()
	c := callerOf(r)
	// An admin lists every tenant, unless it acts as one (Sandbox-Tenant)
	// or filters by one (?tenant=).
	q := sandbox.ListQuery{Tenant: c.Namespace(), AllTenants: c.Admin && r.Header.Get(api.TenantHeader) == "", Limit: api.MaxListLimit}
	if t := v.Get("tenant"); t != "" {
		if !c.Admin {
			return q, api.Errorf(api.CodeForbidden, "?tenant= needs an admin key")
		}
		if t != tenant.Default {
			if err := tenant.ValidateName(t); err != nil {
				return q, err.(*api.Error)
			}
			q.Tenant = t
		} else {
			q.Tenant = ""
		}
		q.AllTenants = false
	}
	if labels := v["label"]; len(labels) > 0 {
		if len(labels) > maxListLabels {
			return q, api.Errorf(api.CodeValidationFailed, "%d label filters; at most %d are allowed", len(labels), maxListLabels)
		}
		q.Labels = map[string]string{}
		for _, l := range labels {
			k, val, ok := strings.Cut(l, "=")
			if !ok || k == "" || len(l) > maxLabelBytes || !utf8.ValidString(l) {
				return q, api.Errorf(api.CodeValidationFailed, "label filter %.64q: want key=value, at most %d bytes", l, maxLabelBytes)
			}
			q.Labels[k] = val
		}
	}
	if st := v.Get("status"); st != "" {
		if !validStatus(st) {
			return q, api.Errorf(api.CodeValidationFailed, "status %.32q: want creating, running, sleeping, stopped, failed or destroying", st)
		}
		q.Status = sandbox.Status(st)
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > api.MaxListLimit {
			return q, api.Errorf(api.CodeValidationFailed, "limit %.16q: want 1 to %d", l, api.MaxListLimit)
		}
		q.Limit = n
	}
	if t := v.Get("pageToken"); t != "" {
		after, ok := decodePageToken(t)
		if !ok {
			return q, api.Errorf(api.CodeValidationFailed, "pageToken is not one this daemon gave out")
		}
		q.After = after
	}
	return q, nil
}

// validStatus reports whether s is a status of the lifecycle (the one list
// of them).
func validStatus(s string) bool {
	return slices.Contains(sandbox.Statuses(), sandbox.Status(s))
}

// encodePageToken makes the token of the page after the scoped ID last.
// It is only a position: whatever a caller puts in one, the list stays
// the caller's own.
func encodePageToken(last string) string {
	return pageTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(last))
}

// PageToken is the token of the page after the scoped ID last, as a
// daemon gives it out: a cluster's gateway makes it for the merged list.
func PageToken(last string) string { return encodePageToken(last) }

func decodePageToken(t string) (string, bool) {
	rest, ok := strings.CutPrefix(t, pageTokenPrefix)
	if !ok || len(t) > maxPageTokenBytes {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}
