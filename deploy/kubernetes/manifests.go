// Package kubernetes holds sandboxd's Kubernetes manifests, embedded for
// the code that installs them (internal/kubetest installs the CRD into the
// test API server). The files here are what an operator applies.
package kubernetes

import _ "embed"

// CRD is crd.yaml: the Sandbox custom resource definition.
//
//go:embed crd.yaml
var CRD []byte
