// Package policy is warmpool's pure scaling policy: from one evaluation's view of a CI queue it
// decides how many runner nodes a pool should have.
//
// It makes no client calls and does no I/O; time comes in as Input.Now, so every rule is tested
// with fixed instants. Reconcilers gather the inputs, call Policy.Decide, actuate Decision.Desired
// (placeholder pods) and keep the returned State for the next evaluation.
//
// The rules, in order:
//
//   - QueueNodes = ceil((queued+running) / JobsPerNode).
//   - The warm floor at t is the max of Config.WarmMinimum and the Minimum of every warm window
//     active at t, capped by MaxNodes (MaxNodes is a hard limit and wins over any minimum).
//   - Target = clamp(max(QueueNodes, floor), floor, MaxNodes).
//   - Scale-up is immediate: Target > previous desired gives Target.
//   - Scale-down is stabilized like the HPA's: desired only falls to the highest Target
//     recommended during the last ScaleDownStabilization, and by at most ScaleDownStep per
//     evaluation. A queue that oscillates therefore holds the pool at its peak instead of flapping.
//   - Unknown queue data (a stale source) holds the previous desired count; only the warm floor
//     can raise it. Held values are recorded as recommendations, so once data returns a scale-down
//     still needs a full window of fresh evidence.
package policy
