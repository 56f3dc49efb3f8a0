package rootfs

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// maxMountOptions is the longest option string mount(2) takes: one page.
const maxMountOptions = 4096 - 1

// mountManyLayers mounts an overlay whose option string would exceed a
// page (an image with many layers, or a long state directory) through the
// new mount API, which takes each lower directory on its own ("lowerdir+",
// Linux 6.8 and later). lowers are top first, as in the option string.
func mountManyLayers(lowers []string, upper, work, target string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("overlay with %d layers needs the new mount API: %w", len(lowers), err)
	}
	defer unix.Close(fd)
	for _, l := range lowers {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			return fmt.Errorf("overlay with %d layers: adding %s (needs Linux 6.8 or later): %w", len(lowers), l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return err
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("creating overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mounting overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching overlay on %s: %w", target, err)
	}
	return nil
}
