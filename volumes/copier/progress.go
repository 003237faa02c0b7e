package copier

import "time"

func (c *copier) startProgress() (stop func()) {
	if c.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(c.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.opts.Progress(c.progress(false))
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		c.opts.Progress(c.progress(true))
	}
}

func (c *copier) progress(final bool) Progress {
	el := time.Since(c.start)
	p := Progress{
		BytesDone:  c.dataBytes.Load() + c.holeBytes.Load() + c.skippedBytes.Load(),
		BytesTotal: c.bytesTotal.Load(),
		FilesDone:  c.filesDone.Load(),
		FilesTotal: c.filesTotal.Load(),
		ScanDone:   c.scanDone.Load(),
		Elapsed:    el,
		Final:      final,
	}
	if s := el.Seconds(); s > 0 {
		p.BytesPerSecond = float64(c.dataBytes.Load()) / s
	}
	return p
}
