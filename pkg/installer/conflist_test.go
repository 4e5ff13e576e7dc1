package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/containernetworking/cni/libcni"
	"golang.org/x/sys/unix"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// What a runtime makes of it: libcni (as containerd and CRI-O use it) loads it, and picks 1.1.0.
func TestRenderedConfigLoadsInLibcni(t *testing.T) {
	b, err := conflist.Render(conflist.NetParams{PodCIDRs: prefixes("10.244.1.0/24", "fd00:1::/64"), MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	nl, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if nl.Name != "cni-suite" || len(nl.Plugins) != 2 {
		t.Fatalf("libcni: name %q, %d plugins", nl.Name, len(nl.Plugins))
	}
	if nl.CNIVersion != "1.1.0" {
		t.Errorf("libcni picked cniVersion %q, want 1.1.0 from cniVersions", nl.CNIVersion)
	}
	if nl.Plugins[0].Network.Type != "bridge" || nl.Plugins[1].Network.Type != "portmap" {
		t.Errorf("plugin types %q, %q", nl.Plugins[0].Network.Type, nl.Plugins[1].Network.Type)
	}
	if !nl.Plugins[1].Network.Capabilities["portMappings"] {
		t.Error("portmap lacks the portMappings capability")
	}
	// Without cniVersions (an older libcni, as in containerd 1.6) the version is 1.0.0.
	var m map[string]any
	json.Unmarshal(b, &m)
	delete(m, "cniVersions")
	old, _ := json.Marshal(m)
	nl, err = libcni.ConfListFromBytes(old)
	if err != nil {
		t.Fatal(err)
	}
	if nl.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q, want 1.0.0", nl.CNIVersion)
	}
}

func TestWriteConflistOnlyWhenChanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created on demand
	name := conflist.ConfFileName("cni-suite")
	a, _ := conflist.Render(conflist.NetParams{PodCIDRs: prefixes("10.1.0.0/24")})
	b, _ := conflist.Render(conflist.NetParams{PodCIDRs: prefixes("10.2.0.0/24")})
	wrote, err := WriteConflist(dir, name, a)
	if err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	fi, _ := os.Stat(filepath.Join(dir, name))
	if fi.Mode() != conflist.ConfMode {
		t.Errorf("mode %s, want %s", fi.Mode(), conflist.ConfMode)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	if wrote, err := WriteConflist(dir, name, a); err != nil || wrote {
		t.Fatalf("same bytes: wrote=%v err=%v, want no write", wrote, err)
	}
	fi, _ = os.Stat(filepath.Join(dir, name))
	if fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("same bytes but the file was replaced")
	}
	// Same bytes, wrong mode: fixed in place.
	os.Chmod(filepath.Join(dir, name), 0o644)
	if _, err := WriteConflist(dir, name, a); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode() != conflist.ConfMode {
		t.Errorf("mode %s after rewrite, want %s", fi.Mode(), conflist.ConfMode)
	}
	if wrote, err := WriteConflist(dir, name, b); err != nil || !wrote {
		t.Fatalf("new bytes: wrote=%v err=%v", wrote, err)
	}
	if got := mustRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
		t.Errorf("content %s", got)
	}
	for _, step := range []string{"create", "write", "chmod", "sync", "close", "rename"} {
		f := func(_, s string) error {
			if s == step {
				return errors.New("injected")
			}
			return nil
		}
		if _, err := writeConflist(dir, name, a, f); err == nil {
			t.Errorf("%s: no error", step)
		}
		if got := mustRead(t, filepath.Join(dir, name)); !bytes.Equal(got, b) {
			t.Errorf("%s failure changed the file", step)
		}
		if tf := tempFiles(t, dir); len(tf) != 0 {
			t.Errorf("%s failure left %v", step, tf)
		}
	}
}

// A runtime watching the conf dir (containerd uses inotify) never sees a partial or unparsable
// .conflist, however often it is rewritten. The configs are padded to 256 KiB so that a
// non-atomic writer would be caught in the middle (the control at the end shows it is).
func TestConflistWatcherNeverSeesPartialFile(t *testing.T) {
	dir := t.TempDir()
	name := conflist.ConfFileName("cni-suite")
	docs := make([][]byte, 2)
	for i := range docs {
		d, err := conflist.Render(conflist.NetParams{PodCIDRs: prefixes(fmt.Sprintf("10.%d.0.0/24", i+1))})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(d, &m)
		m["padding"] = strings.Repeat(fmt.Sprint(i), 256<<10)
		docs[i], _ = json.Marshal(m)
	}
	run := func(write func(data []byte) error) (reads, bad int, example string) {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
			t.Fatal(err)
		}
		var nreads, nbad atomic.Int64
		var mu sync.Mutex
		check := func() {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				return
			}
			nreads.Add(1)
			var v map[string]any
			if err != nil || json.Unmarshal(b, &v) != nil || v["name"] != "cni-suite" {
				nbad.Add(1)
				mu.Lock()
				if example == "" {
					example = fmt.Sprintf("%d bytes, err %v", len(b), err)
				}
				mu.Unlock()
			}
		}
		var stopped atomic.Bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the inotify watcher: reads on every event about a .conflist
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := unix.Read(fd, buf)
				if err != nil || n <= 0 || stopped.Load() {
					return
				}
				for off := 0; off+unix.SizeofInotifyEvent <= n; {
					ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
					nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
					off += unix.SizeofInotifyEvent + int(ev.Len)
					if strings.HasSuffix(strings.TrimRight(string(nameBytes), "\x00"), ".conflist") {
						check()
					}
				}
			}
		}()
		stop := make(chan struct{})
		go func() { // and a plain poller
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					check()
				}
			}
		}()
		for i := 0; i < 200; i++ {
			if err := write(docs[i%2]); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		stopped.Store(true)
		os.WriteFile(filepath.Join(dir, "wake"), nil, 0o600) // an event, so the watcher's read returns
		wg.Wait()
		unix.Close(fd)
		os.Remove(filepath.Join(dir, "wake"))
		return int(nreads.Load()), int(nbad.Load()), example
	}

	reads, bad, ex := run(func(data []byte) error { _, err := WriteConflist(dir, name, data); return err })
	t.Logf("atomic writer: %d reads, %d partial", reads, bad)
	if bad > 0 {
		t.Errorf("a reader saw %d partial or unparsable configs (e.g. %s)", bad, ex)
	}
	if reads < 200 {
		t.Errorf("only %d reads for 200 writes: the readers did not keep up enough to mean anything", reads)
	}
	// Control: writing in place (as a naive installer would) is caught by the same readers.
	os.Remove(filepath.Join(dir, name))
	_, bad, _ = run(func(data []byte) error {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		for off := 0; off < len(data); off += 32 << 10 {
			f.Write(data[off:min(off+32<<10, len(data))])
		}
		return f.Close()
	})
	t.Logf("control, in-place writer: %d partial reads seen", bad)
	if bad == 0 {
		t.Error("control: the readers never caught an in-place writer mid-write, so they prove nothing")
	}
}

func TestEarlierConfigsAndReady(t *testing.T) {
	dir := t.TempDir()
	ours := conflist.ConfFileName("cni-suite")
	for _, n := range []string{"05-old.conf", "00-a.json", "09-x.conflist", "README", "99-late.conflist", "01-b.conf.bak"} {
		writeFile(t, filepath.Join(dir, n), []byte("{}"), 0o644)
	}
	os.Mkdir(filepath.Join(dir, "02-dir.conf"), 0o755)
	got, err := EarlierConfigs(dir, ours)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "00-a.json 05-old.conf 09-x.conflist" {
		t.Errorf("EarlierConfigs = %v", got)
	}

	if err := CheckConflist(dir, ours, "cni-suite"); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("ready without a config: %v", err)
	}
	writeFile(t, filepath.Join(dir, ours), []byte(`{"name":"cni-suite","plugins":[`), 0o600)
	if err := CheckConflist(dir, ours, "cni-suite"); err == nil {
		t.Error("ready with a broken config")
	}
	writeFile(t, filepath.Join(dir, ours), []byte(`{"name":"other","plugins":[{}]}`), 0o600)
	if err := CheckConflist(dir, ours, "cni-suite"); err == nil {
		t.Error("ready with another network's config")
	}
	b, _ := conflist.Render(conflist.NetParams{PodCIDRs: prefixes("10.1.0.0/24")})
	writeFile(t, filepath.Join(dir, ours), b, 0o600)
	if err := CheckConflist(dir, ours, "cni-suite"); err != nil {
		t.Errorf("not ready with our config: %v", err)
	}
}
