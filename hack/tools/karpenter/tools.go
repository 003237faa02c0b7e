//go:build tools

// Package tools pins Karpenter's KWOK cloud provider, the real Karpenter the e2e tier runs.
package tools

import _ "sigs.k8s.io/karpenter/kwok"
