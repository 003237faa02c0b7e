package volumes

import "time"

// EngineStopBy is the latest moment the engine may be told to stop for a save to still fit
// before the deadline d: the deadline less the margin, the shortest copy worth starting, and the
// time the engine's own stop needs once its clients are gone (engineStop).
func (w Window) EngineStopBy(d Deadline, engineStop time.Duration) time.Time {
	return d.At.Add(-w.Margin - w.Minimum - engineStop)
}
