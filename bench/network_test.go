package bench

import (
	"fmt"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkSetNetworkPolicy: PUT /v1/sandboxes/{id}/network on a running
// sandbox, from the call to its answer, which comes after the policy is
// stored, the nftables transaction applied and the connections it denies
// cut: the time until the new policy holds. Policies alternate between
// two, so that every call changes the sets; "small" has 3 entries, "256"
// the most a policy may have.
func BenchmarkSetNetworkPolicy(b *testing.B) {
	for _, size := range []int{3, api.MaxPolicyEntries} {
		b.Run(fmt.Sprintf("entries=%d", size), func(b *testing.B) {
			once(b, func(b *testing.B) {
				d := testdaemon.Start(b, testdaemon.Options{})
				ctx := ctxFor(b)
				sb := d.Client.Sandbox("policy", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet}))
				if _, err := sb.Ensure(ctx); err != nil {
					b.Fatal(err)
				}
				policies := [2]api.NetworkPolicy{policyOf(size, "a"), policyOf(size, "b")}
				s := measure(b, sampleCount(), func(i int) {
					if _, err := sb.SetNetwork(ctx, policies[i%2]); err != nil {
						b.Fatal(err)
					}
				})
				s.report(b)
			})
		})
	}
}

// policyOf is a default-deny policy of n entries: domains, and a quarter
// of CIDRs of each kind.
func policyOf(n int, tag string) api.NetworkPolicy {
	p := api.NetworkPolicy{Default: api.EgressDeny}
	for i := 0; i < n; i++ {
		switch i % 4 {
		case 0:
			p.AllowCIDRs = append(p.AllowCIDRs, fmt.Sprintf("198.51.%d.%d/32", i/250, i%250))
		case 1:
			p.DenyCIDRs = append(p.DenyCIDRs, fmt.Sprintf("203.0.%d.%d/32", i/250, i%250))
		case 2:
			p.DenyDomains = append(p.DenyDomains, fmt.Sprintf("d%d.%s.example", i, tag))
		default:
			p.AllowDomains = append(p.AllowDomains, fmt.Sprintf("*.a%d.%s.example", i, tag))
		}
	}
	return p
}
