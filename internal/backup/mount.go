package backup

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// MountImage mounts the squashfs image read-only at target through a loop
// device (mount(8) sets it to clear itself when the image's last mount
// goes, so unmounting is all the cleanup there is). nosuid and nodev: the
// image holds what a sandbox wrote.
func MountImage(ctx context.Context, image, target string) error {
	out, err := exec.CommandContext(ctx, "mount", "-t", "squashfs", "-o", "loop,ro,nosuid,nodev", image, target).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mounting backup image %s: %s: %w", image, strings.TrimSpace(string(out)), err)
	}
	return nil
}
