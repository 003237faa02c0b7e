// Package operatortest is the one harness the suites that run warmpool's manager share: the
// pools, scaling, cache and status suites (each against a real kube-apiserver with the real
// CRDs, see e2e/cluster.RunTests) and e2e/scenario (against the local cluster).
//
// It starts a manager in the background and stops it (Start, Running.Stop), gives a test a
// namespace of its own with its ConfigMap (NewEnv), writes configs (Config, Pool, Unique), polls
// (Eventually, Consistently), and reads the manager's metrics from the registry it serves
// (Metric). It holds no state between tests but the names Unique handed out.
package operatortest
