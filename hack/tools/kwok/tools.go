//go:build tools

// Package tools pins the kwok controller that plays kubelet for fake nodes.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
