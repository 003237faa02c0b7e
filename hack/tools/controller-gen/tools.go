//go:build tools

// Package tools pins controller-gen, which turns the kubebuilder RBAC markers in controller/
// into the chart's ClusterRole and Role (make manifests).
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
