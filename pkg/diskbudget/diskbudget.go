// Package diskbudget decides whether the node's image filesystem has room
// for another pull or another pinned image. The kubelet garbage-collects
// unused images once the image filesystem passes imageGCHighThresholdPercent
// (85% by default) and evicts pods below imagefs.available (15%): a
// pre-puller filling the disk past those would delete the images it just
// warmed, or evict running work. So pulls wait while usage is above a
// budget set below the kubelet's threshold, and pins, which the GC cannot
// reclaim, are capped at a fraction of the filesystem so the GC always has
// something left to free.
package diskbudget

import "fmt"

// Usage is one reading of the image filesystem.
type Usage struct {
	// Path is the filesystem read (the runtime's image store mountpoint).
	Path string
	// Capacity and Available are the filesystem's, in bytes, as the
	// kubelet reads them.
	Capacity, Available int64
}

// Ratio is the used fraction of the filesystem, as the kubelet computes
// it for its GC thresholds: 1 - available/capacity.
func (u Usage) Ratio() float64 {
	if u.Capacity <= 0 {
		return 0
	}
	return 1 - float64(u.Available)/float64(u.Capacity)
}

// Budget is what the daemon may use of the image filesystem.
type Budget struct {
	// MaxUsage is the used fraction above which pulls wait (0 or 1 and
	// above: never wait).
	MaxUsage float64
	// MaxPinned is the fraction of the filesystem pinned images may take
	// together (0: pin nothing; 1 and above: no cap).
	MaxPinned float64
}

// Admit says whether a pull may start with the filesystem at u, and when
// not, why, naming the usage, the limit and the flag.
func (b Budget) Admit(u Usage) (bool, string) {
	if b.MaxUsage <= 0 || b.MaxUsage >= 1 || u.Capacity <= 0 {
		return true, ""
	}
	if r := u.Ratio(); r > b.MaxUsage {
		return false, fmt.Sprintf("waiting for disk space: the image filesystem %s is %s used (%s of %s free), above the daemon's --max-image-fs-usage of %s; the pull starts when usage falls below it (the kubelet's image GC, or removing images, frees space)",
			u.Path, pct(r), Bytes(u.Available), Bytes(u.Capacity), pct(b.MaxUsage))
	}
	return true, ""
}

// MayPin says whether an image of size bytes may be pinned when pinned
// bytes are pinned already, and when not, why.
func (b Budget) MayPin(u Usage, pinned, size int64) (bool, string) {
	if b.MaxPinned >= 1 {
		return true, ""
	}
	if u.Capacity <= 0 {
		return false, "not pinned: the image filesystem's size is unknown, so --max-pinned-fraction cannot be checked (see the daemon's log)"
	}
	limit := int64(b.MaxPinned * float64(u.Capacity))
	if pinned+size > limit {
		return false, fmt.Sprintf("not pinned: pinning %s more would take pinned images to %s, above --max-pinned-fraction %s of the image filesystem %s (%s); the image stays, but the kubelet's image GC may remove it",
			Bytes(size), Bytes(pinned+size), pct(b.MaxPinned), u.Path, Bytes(limit))
	}
	return true, ""
}

func pct(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }

// Bytes prints a byte count in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
