// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// pinnable is a map or a link: what a loader pins so that a restarted process adopts it.
type pinnable interface {
	Pin(fileName string) error
	Unpin() error
}

// pinSet is what a loader pinned, each pin with the inode its file had when pinned: a pin
// file that is gone was removed under the running process, one with another inode was taken
// over by another object.
type pinSet struct {
	pins []pin
}

type pin struct {
	path   string
	object pinnable
	inode  uint64
}

// pinnedObjects is every pinned object of a loader by its pin file: its maps, pinned by name
// in pinPath, and its links, by their files.
func pinnedObjects(pinPath string, maps map[string]*ebpf.Map, links map[string]link.Link) map[string]pinnable {
	objects := map[string]pinnable{}
	for name, m := range maps {
		objects[filepath.Join(pinPath, name)] = m
	}
	for file, l := range links {
		objects[file] = l
	}
	return objects
}

// newPinSet records the pins of objects, by path, as they are now.
func newPinSet(objects map[string]pinnable) (*pinSet, error) {
	s := &pinSet{}
	for path, object := range objects {
		inode, err := inodeOf(path)
		if err != nil {
			return nil, fmt.Errorf("pinned object: %w", err)
		}
		s.pins = append(s.pins, pin{path: path, object: object, inode: inode})
	}
	slices.SortFunc(s.pins, func(a, b pin) int { return strings.Compare(a.path, b.path) })
	return s, nil
}

// restore pins again every object whose pin file was removed, and returns their paths. Pins
// another object took over are left alone and reported in the error.
func (s *pinSet) restore() (restored []string, err error) {
	var errs []error
	for i := range s.pins {
		p := &s.pins[i]
		inode, err := inodeOf(p.path)
		switch {
		case err == nil && inode == p.inode:
			continue
		case err == nil:
			errs = append(errs, fmt.Errorf("%s is pinned by another object: a restart would adopt that one", p.path))
			continue
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
			continue
		}
		// The object still holds the path it was pinned at: Unpin forgets it (its file is
		// gone already), so that Pin pins it anew.
		if err := errors.Join(os.MkdirAll(filepath.Dir(p.path), 0o700), p.object.Unpin(), p.object.Pin(p.path)); err != nil {
			errs = append(errs, fmt.Errorf("pinning %s again: %w", p.path, err))
			continue
		}
		if p.inode, err = inodeOf(p.path); err != nil {
			errs = append(errs, err)
			continue
		}
		restored = append(restored, p.path)
	}
	return restored, errors.Join(errs...)
}

func inodeOf(path string) (uint64, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return info.Sys().(*syscall.Stat_t).Ino, nil
}

// PinGuard keeps a loader's pins in place: without them, the next process to start (a
// restarted speaker or agent) would not adopt the maps and link, and the program would be
// detached when this process exits. A restore is logged as an error, since something removed
// state it must not touch, and counted; pins it cannot restore are reported by a gauge and
// logged once per distinct error.
type PinGuard struct {
	restore  func() ([]string, error)
	logger   log.Logger
	restored prometheus.Counter
	lost     prometheus.Gauge
	lastErr  string
}

// NewPinGuard guards the pins that restore puts back (Datapath.RestorePins,
// Decap.RestorePins); its metrics are maglb_datapath_pins_restored_total and
// maglb_datapath_pins_unrestorable.
func NewPinGuard(restore func() ([]string, error), logger log.Logger) *PinGuard {
	return &PinGuard{
		restore: restore,
		logger:  logger,
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "maglb_datapath_pins_restored_total",
			Help: "Pinned maps and links of the eBPF datapath that were removed under the running process and pinned again.",
		}),
		lost: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "maglb_datapath_pins_unrestorable",
			Help: "1 while a pin of the eBPF datapath is missing or held by another object and cannot be restored: a restart would lose the programmed state.",
		}),
	}
}

// Check restores what is missing now.
func (g *PinGuard) Check() {
	restored, err := g.restore()
	if len(restored) > 0 {
		g.restored.Add(float64(len(restored)))
		level.Error(g.logger).Log("op", "pins", "msg", "pinned datapath state was removed under the running process: pinned again", "pins", strings.Join(restored, ","))
	}
	if err == nil {
		g.lost.Set(0)
		g.lastErr = ""
		return
	}
	g.lost.Set(1)
	if err.Error() != g.lastErr {
		level.Error(g.logger).Log("op", "pins", "msg", "cannot restore the datapath's pins: a restart would lose the programmed state", "error", err)
		g.lastErr = err.Error()
	}
}

// pinCheckInterval is how often PinGuard.Run checks the pins: a restart within it of a
// process whose pins were removed still loses the state.
const pinCheckInterval = 5 * time.Second

// Run checks the pins every pinCheckInterval until ctx ends.
func (g *PinGuard) Run(ctx context.Context) {
	ticker := time.NewTicker(pinCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			g.Check()
		}
	}
}

func (g *PinGuard) Describe(ch chan<- *prometheus.Desc) {
	g.restored.Describe(ch)
	g.lost.Describe(ch)
}

func (g *PinGuard) Collect(ch chan<- prometheus.Metric) {
	g.restored.Collect(ch)
	g.lost.Collect(ch)
}
