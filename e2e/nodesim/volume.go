package nodesim

import (
	"errors"
	"fmt"
	"path/filepath"
)

// MountPath is where a volume is mounted (through the EBS model) while pods use it.
func (s *Sim) MountPath(handle string) string { return filepath.Join(s.root, "mounts", handle) }

// addVolume sets up the model of a volume just provisioned (its data already at
// VolumePath). A volume set up already keeps its model: provisioning is retried.
func (s *Sim) addVolume(claim, handle string, m volumeModel) error {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	if _, ok := s.volumes[handle]; ok {
		return nil
	}
	if claim != "" {
		s.claims[claim] = append(s.claims[claim], handle)
	}
	v, err := newEBSVolume(handle, s.VolumePath(handle), s.MountPath(handle), m)
	if err != nil {
		return err
	}
	s.volumes[handle] = v
	s.logf("volume %s: reads and writes together %s, lazy loading %s, initialization %s", handle,
		mibps(m.rate), lazyString(m), mibps(m.initRate))
	return nil
}

func lazyString(m volumeModel) string {
	if m.latency <= 0 {
		return "none"
	}
	return fmt.Sprintf("%s per first read of a %d KiB block", m.latency, m.blockSize>>10)
}

// mountVolume mounts a volume through its model, once, and returns where. A volume this
// simulator did not provision (made before it started) gets the default model, not lazy.
func (s *Sim) mountVolume(handle string) (string, error) {
	s.volMu.Lock()
	v, ok := s.volumes[handle]
	s.volMu.Unlock()
	if !ok {
		m, err := s.ebs.modelFor(nil, false, false)
		if err != nil {
			return "", err
		}
		if err := s.addVolume("", handle, m); err != nil {
			return "", err
		}
		s.volMu.Lock()
		v = s.volumes[handle]
		s.volMu.Unlock()
	}
	s.volMu.Lock()
	defer s.volMu.Unlock()
	if err := v.mount(); err != nil {
		return "", err
	}
	return v.mountpoint, nil
}

// releaseVolume unmounts a volume and drops its model (the volume is being deleted).
func (s *Sim) releaseVolume(handle string) error {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	v, ok := s.volumes[handle]
	if !ok {
		return nil
	}
	delete(s.volumes, handle)
	err := v.release()
	s.volumeHistory[handle] = v.stats()
	return err
}

// releaseVolumes unmounts every volume (Stop).
func (s *Sim) releaseVolumes() error {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	var errs []error
	for h, v := range s.volumes {
		errs = append(errs, v.release())
		s.volumeHistory[h] = v.stats()
		delete(s.volumes, h)
	}
	return errors.Join(errs...)
}

// VolumeStats reports what the volume with this handle (its PV name) served through the EBS
// model, up to its deletion for a deleted one; ok is false for a volume this simulator
// never provisioned nor mounted.
func (s *Sim) VolumeStats(handle string) (VolumeStats, bool) {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	if v, ok := s.volumes[handle]; ok {
		return v.stats(), true
	}
	st, ok := s.volumeHistory[handle]
	return st, ok
}

// VolumesOf lists the volumes (handles, oldest first) provisioned for the claims named
// namespace/name, including deleted ones: a save's claim is gone once its snapshot is cut.
func (s *Sim) VolumesOf(namespace, name string) []string {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	return append([]string(nil), s.claims[namespace+"/"+name]...)
}
