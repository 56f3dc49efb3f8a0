package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sandboxd/sandboxd/internal/network"
)

func TestBlockedRanges(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name     string
		in       []string
		want     []netip.Prefix
		hostNets bool
		err      bool
	}{
		{"default", nil, network.DefaultBlocked, true, false},
		{"nothing", []string{}, []netip.Prefix{}, false, false},
		{"host only", []string{"host"}, []netip.Prefix{}, true, false},
		{"private and more", []string{"private", " 203.0.113.7 ", "198.18.0.1/15"},
			append(slices.Clone(network.DefaultBlocked), p("203.0.113.7/32"), p("198.18.0.0/15")), false, false},
		{"ipv6", []string{"fd00::/8"}, nil, false, true},
		{"word", []string{"lan"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, hostNets, err := blockedRanges(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("blockedRanges(%q) error = %v, want error %v", tt.in, err, tt.err)
			}
			if tt.err {
				return
			}
			if !slices.Equal(got, tt.want) || hostNets != tt.hostNets {
				t.Errorf("blockedRanges(%q) = %v, %v; want %v, %v", tt.in, got, hostNets, tt.want, tt.hostNets)
			}
		})
	}
}
