package copier

import (
	"path"
	"path/filepath"
)

// An incremental copy takes dst to be as its Previous manifest describes it (see
// Options.Previous): it does not list dst's directories, nor look at the files it leaves
// alone. On a volume made from an EBS snapshot the first look at each directory waits on S3
// and counts against the volume's IOPS: an incremental save that listed every directory of
// dst and looked up every unchanged file read more I/Os of directories than it wrote of
// files (BenchmarkCacheOnEBS at 32 MiB/s: 1,883 reads beside 1,164 writes), and a directory
// none of whose files changed need not be read at all.
//
// The manifest can be trusted for it: the copy that made dst wrote it last, after syncing
// everything else, and a copy removes it before it changes anything (prepareDst), so a dst
// with a manifest is exactly as the manifest says, unless something else wrote to it. That
// is caught where it matters: a restore checks every entry it reads against the manifest and
// refuses a source that differs (expectation). Where dst turns out to hold a directory that
// Previous does not list, the copy looks, as without Previous.

// dstListing maps each directory of the tree m describes (slash-separated, "" for the root)
// to the names it holds.
func dstListing(m *Manifest) map[string][]string {
	dirs := make(map[string][]string, m.Totals.Dirs+1)
	for i := range m.Entries {
		dir, name := path.Split(m.Entries[i].Path)
		dir = path.Clean("/" + dir)[1:]
		dirs[dir] = append(dirs[dir], name)
	}
	return dirs
}

// previous is dst/rel as Previous describes it: ok is false without Previous (dst has to be
// looked at); e is nil where Previous has no such entry.
func (c *copier) previous(rel string) (e *Entry, ok bool) {
	if c.prevDirs == nil {
		return nil, false
	}
	return c.prev[filepath.ToSlash(rel)], true
}
