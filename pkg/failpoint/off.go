//go:build !failpoints

package failpoint

// Hit does nothing: this binary was built without the failpoints tag.
func Hit(string) {}
