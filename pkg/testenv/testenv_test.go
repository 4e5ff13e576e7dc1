package testenv

import (
	"os"
	"strings"
	"testing"
)

func TestNSLifecycle(t *testing.T) {
	var path string
	t.Run("make", func(t *testing.T) {
		n := NewNS(t, "life")
		path = n.Path
		if _, err := os.Stat(n.Path); err != nil {
			t.Fatalf("netns not bound: %v", err)
		}
		out := n.MustExec(t, "ip", "-o", "link", "show")
		if !strings.Contains(out, "lo:") || strings.Contains(out, "eth0") {
			t.Fatalf("a fresh netns should hold only lo: %s", out)
		}
	})
	if path == "" {
		t.Skip("subtest skipped")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("netns %s still present after cleanup: %v", path, err)
	}
}
