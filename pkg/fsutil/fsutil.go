// Package fsutil holds the file operations the shim's records and config.json
// rewrites share.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/userns-shim/userns-shim/pkg/failpoint"
)

// TempInfix marks WriteAtomic's temporary files: .<name>.userns-shim-<random>.
const TempInfix = ".userns-shim-"

// IsTemp reports whether a file name is one of WriteAtomic's temporary files,
// which a killed shim can leave behind.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempInfix)
}

// WriteAtomic replaces path with data via a temporary file and rename:
// every reader sees the old file or the whole new one, whenever the writer
// is killed. It does not fsync (0.3 to 5 ms on a disk, a tenth of a
// container start): only a host crash could expose a partial file, and after
// one these files are dead anyway. config.json is written anew by the CRI
// runtime (CRI-O and containerd keep bundles in /run; podman writes the spec
// at every start), and the state dir describes pins and containers that died
// with the host. ext4 also commits the data of a file renamed over another
// before the rename (auto_da_alloc).
func WriteAtomic(path string, data []byte, mode os.FileMode, uid, gid int) (err error) {
	dir, base := filepath.Split(path)
	tmp, err := os.CreateTemp(dir, "."+base+TempInfix+"*")
	if err != nil {
		return fmt.Errorf("create temporary file next to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if uid >= 0 && (uid != os.Geteuid() || gid != os.Getegid()) {
		if err = tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", tmp.Name(), err)
		}
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	failpoint.Hit(failpoint.TempWritten + "/" + base)
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	return nil
}

// IsName reports whether s is non-empty, at most max bytes, not "." or "..",
// and made only of ASCII letters, digits and the bytes in punct: a string
// that is safe as one path component. (A hand-written check: a regexp costs
// a few hundred microseconds to compile at every start of the shim.)
func IsName(s string, max int, punct string) bool {
	if s == "" || len(s) > max || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || strings.IndexByte(punct, c) >= 0 {
			continue
		}
		return false
	}
	return true
}
