// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

// ensurePinPath mounts bpffs on /sys/fs/bpf unless something is mounted there already, and
// creates dir, which must then be on a bpffs.
func ensurePinPath(dir string) error {
	if !isBPFFS(bpffsRoot) {
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mounting bpffs on %s: %w", bpffsRoot, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("pin path %s is not on a bpffs", dir)
	}
	return nil
}

func isBPFFS(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.BPF_FS_MAGIC
}
