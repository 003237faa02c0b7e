package config

// The engine section: pools[].engine (image, host paths, release contract, grace, GC sizes).

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"

	units "github.com/docker/go-units"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"warmpool.io/warmpool/volumes/engine"
)

func validateEngine(p *Pool, fp *field.Path) field.ErrorList {
	e := &p.Engine
	var errs field.ErrorList
	if e.ExistingDaemonSet != nil {
		if len(e.ExistingDaemonSet.MatchLabels) == 0 && len(e.ExistingDaemonSet.MatchExpressions) == 0 {
			errs = append(errs, field.Required(fp.Child("existingDaemonSet"), "a non-empty label selector"))
		}
		sel := e.ExistingDaemonSet.DeepCopy()
		errs = append(errs, validateLabelMap(sel.MatchLabels, fp.Child("existingDaemonSet", "matchLabels"))...)
		sel.MatchLabels = nil
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, fp.Child("existingDaemonSet"))...)
	}
	errs = append(errs, validateEngineRelease(e, fp)...)
	if !imageRE.MatchString(e.Image) {
		errs = append(errs, field.Invalid(fp.Child("image"), e.Image,
			`must be an image reference: a repository ("registry.dagger.io/engine"; the tag then comes from version), optionally with a :tag or @digest`))
	}
	if clean := path.Clean(e.HostPath); !path.IsAbs(e.HostPath) || clean != e.HostPath {
		errs = append(errs, field.Invalid(fp.Child("hostPath"), e.HostPath, "must be a clean absolute path"))
	} else if !strings.HasPrefix(e.HostPath, NVMeMountPath+"/") {
		errs = append(errs, field.Invalid(fp.Child("hostPath"), e.HostPath,
			"must be under the NVMe RAID0 mount "+NVMeMountPath+" (other host paths are on the EBS root volume)"))
	}
	if !path.IsAbs(e.RunPath) || path.Clean(e.RunPath) != e.RunPath {
		errs = append(errs, field.Invalid(fp.Child("runPath"), e.RunPath, "must be a clean absolute path"))
	}
	errs = append(errs, validateEngineGrace(e, fp)...)
	if r := e.Resources; r != nil {
		for _, name := range sets.List(sets.KeySet(r.Requests)) {
			req := r.Requests[name]
			if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
				errs = append(errs, field.Invalid(fp.Child("resources", "requests").Key(string(name)), req.String(), "must be <= the limit "+lim.String()))
			}
		}
	}
	if gc := e.GC; gc != nil {
		for _, s := range [][2]string{{"maxUsedSpace", gc.MaxUsedSpace}, {"reservedSpace", gc.ReservedSpace}, {"minFreeSpace", gc.MinFreeSpace}} {
			if s[1] == "" {
				continue
			}
			if err := ValidateDiskSpace(s[1]); err != nil {
				errs = append(errs, field.Invalid(fp.Child("gc", s[0]), s[1], err.Error()))
			}
		}
	}
	return errs
}

// ValidateDiskSpace checks a GC size as the engine decodes it from engine.json, so a value
// the engine would refuse at start (it decodes engine.json strictly and exits on an error)
// is refused here first. The engine (engine/config DiskSpace.UnmarshalJSON, buildkitd
// config DiskSpace.UnmarshalText, v0.15 through v1.0-beta) takes the raw JSON value, strips
// one pair of surrounding quotes, then reads "<int>%" (strconv.ParseInt) or a size by
// docker/go-units RAMInBytes: binary units whatever the spelling ("100GB", "100g", "100GiB"
// are all 100 GiB; "100Gi" is refused), a bare number is bytes. The same JSON encoding the
// engine.json renderer uses feeds the same steps here.
//
// Beyond the engine: a percentage must be 1-100 and a size at least 1 byte. The engine
// takes 0 as "unset" (its default policy applies) and a negative or >100 percentage as a
// nonsense share of the disk, so neither is what a user who wrote it meant.
func ValidateDiskSpace(v string) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("must be a string, %w", err)
	}
	text := string(raw)
	if len(text) >= 2 && text[0] == '"' && text[len(text)-1] == '"' {
		text = text[1 : len(text)-1]
	}
	const want = `must be "<int>%" of the node's disk ("75%") or a size in binary units ("100GB" = 100 GiB, "512m" = 512 MiB, "100GiB")`
	if pct, ok := strings.CutSuffix(text, "%"); ok {
		n, err := strconv.ParseInt(pct, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: the engine cannot parse it (%v)", want, err)
		}
		if n < 1 || n > 100 {
			return fmt.Errorf("must be a percentage from 1%% to 100%% of the node's disk (the engine reads 0%% as unset)")
		}
		return nil
	}
	n, err := units.RAMInBytes(text)
	if err != nil {
		return fmt.Errorf("%s: the engine cannot parse it (%v)", want, err)
	}
	if n <= 0 {
		return fmt.Errorf("must be at least 1 byte (the engine reads 0 as unset; omit the field for its default)")
	}
	return nil
}

// validateEngineRelease: the version must be in the table of engine contracts (or name the
// row it behaves like), because what proves the engine's clean exit, and so whether a
// cache may be saved, depends on the release.
func validateEngineRelease(e *Engine, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case e.Version == "":
		errs = append(errs, field.Required(fp.Child("version"), "the engine version keys cache snapshots; supported: "+engine.Supported()))
	case len(validation.IsValidLabelValue(e.Version)) > 0:
		// It labels the engine pods and the cache snapshots.
		errs = append(errs, field.Invalid(fp.Child("version"), e.Version, "must be a valid label value: "+strings.Join(validation.IsValidLabelValue(e.Version), "; ")))
	case e.Contract != "":
		// A release newer than the table, declared to behave like a known row: it must still
		// be a release version, since it tags the image and keys the snapshots.
		if _, err := engine.ByName(e.Contract); err != nil {
			errs = append(errs, field.NotSupported(fp.Child("contract"), e.Contract, contractNames()))
		} else if known, err := engine.ForVersion(e.Version); err == nil && known.Name != e.Contract {
			// The table knows this release: a different row would check its cache against
			// the wrong contract.
			errs = append(errs, field.Invalid(fp.Child("contract"), e.Contract,
				fmt.Sprintf("contradicts the table: %s is in row %q; engine.contract is only for releases newer than the table", e.Version, known.Name)))
		}
		if !releaseRE.MatchString(e.Version) {
			errs = append(errs, field.Invalid(fp.Child("version"), e.Version, "must be a release version like "+engine.Current))
		}
	default:
		if _, err := engine.ForVersion(e.Version); err != nil {
			errs = append(errs, field.Invalid(fp.Child("version"), e.Version,
				fmt.Sprintf("must be an engine release warmpool knows (supported: %s), or set engine.contract to the row a newer release behaves like", engine.Supported())))
		}
	}
	return errs
}

func contractNames() []string {
	var names []string
	for _, c := range engine.Contracts() {
		names = append(names, c.Name)
	}
	return names
}

// validateEngineGrace checks what warmpool can bound about the engine's stop. The engine
// does not bound its own stop (no release does while clients are attached, and after they
// leave it prunes and persists for a time that grows with the cache), so warmpool reserves
// stopSeconds + 30 s at the end of the grace period by ending its drain wait before them.
func validateEngineGrace(e *Engine, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	stop := e.StopSecondsOrDefault()
	if e.StopSeconds != nil && *e.StopSeconds < 1 {
		errs = append(errs, field.Invalid(fp.Child("stopSeconds"), *e.StopSeconds, "must be >= 1: the engine's stop (prune, persist) always takes some time"))
		return errs
	}
	if g := e.TerminationGracePeriodSeconds; g != nil && *g < stop+EngineExitSeconds {
		errs = append(errs, field.Invalid(fp.Child("terminationGracePeriodSeconds"), *g,
			fmt.Sprintf("must be >= stopSeconds + %d (%d): warmpool ends its drain wait for clients that long before the grace period ends, to leave the engine %ds for its own stop and %ds to exit; the engine's stop itself is not bounded, so an engine still stopping when the grace period ends is SIGKILLed and its cache lost",
				EngineExitSeconds, stop+EngineExitSeconds, stop, EngineExitSeconds)))
	}
	return errs
}
