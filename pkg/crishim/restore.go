package crishim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// restore loads the records of a previous run and reconciles them with what is still there:
// half-made sandboxes are undone, helper processes and network namespaces nobody owns are
// removed, and the network is told (CNI GC) which attachments are still in use.
func (s *Server) restore(ctx context.Context) error {
	sbDir := filepath.Join(s.cfg.StateDir, sandboxesDir)
	ents, err := os.ReadDir(sbDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		dir := filepath.Join(sbDir, e.Name())
		sb := &sandbox{dir: dir, cfg: &runtimeapi.PodSandboxConfig{}}
		if err := readJSON(filepath.Join(dir, "sandbox.json"), &sb.rec); err != nil {
			s.log.Warn("dropping unreadable sandbox record", "dir", dir, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		if err := unmarshalProto(sb.rec.Config, sb.cfg); err != nil {
			s.log.Warn("dropping sandbox record with unreadable config", "id", sb.rec.ID, "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		if sb.rec.State == sbCreating {
			s.log.Info("undoing sandbox left half made by a previous run", "id", sb.rec.ID)
			if err := s.undoSandbox(sb); err != nil {
				s.log.Error("undo half-made sandbox", "id", sb.rec.ID, "err", err)
			}
			continue
		}
		s.sandboxes[sb.rec.ID] = sb
		s.names[sandboxKey(sb.cfg.GetMetadata())] = sb.rec.ID
	}
	cDir := filepath.Join(s.cfg.StateDir, containersDir)
	if ents, err = os.ReadDir(cDir); err != nil {
		return err
	}
	for _, e := range ents {
		dir := filepath.Join(cDir, e.Name())
		c := &container{dir: dir, cfg: &runtimeapi.ContainerConfig{}}
		err := readJSON(filepath.Join(dir, "container.json"), &c.rec)
		if err == nil {
			err = unmarshalProto(c.rec.Config, c.cfg)
		}
		var sb *sandbox
		if err == nil {
			sb = s.sandboxes[c.rec.SandboxID]
			if sb == nil {
				err = fmt.Errorf("its pod sandbox %s is gone", c.rec.SandboxID)
			}
		}
		if err != nil {
			s.log.Warn("dropping container record", "dir", dir, "err", err)
			_ = c.stop(0)
			_ = c.rec.Monitor.kill()
			_ = os.RemoveAll(dir)
			continue
		}
		s.containers[c.rec.ID] = c
		s.names[containerKey(c.cfg, sb.cfg)] = c.rec.ID
	}
	s.removeOrphans()
	s.collectGarbage(ctx)
	return nil
}

// removeOrphans kills helper processes of this state dir that no record owns (a sandbox
// record lost, or a shim killed between starting a helper and recording it) and removes
// pinned network namespaces that no sandbox owns.
func (s *Server) removeOrphans() {
	for _, pid := range ProcessesWithArg(s.cfg.StateDir) {
		args := cmdlineArgs(pid)
		if len(args) < 4 || args[2] != s.cfg.StateDir {
			continue
		}
		var owned bool
		switch args[1] {
		case PauseArg:
			sb := s.sandboxes[args[3]]
			owned = sb != nil && sb.rec.Pause.PID == pid
		case MonitorArg:
			c := s.containers[args[3]]
			owned = c != nil && c.rec.Monitor.PID == pid
		default:
			continue
		}
		if !owned {
			if ref, err := refOf(pid); err == nil {
				s.log.Info("killing orphaned helper process", "pid", pid, "role", args[1], "id", args[3])
				_ = ref.kill()
			}
		}
	}
	owned := map[string]bool{}
	for _, sb := range s.sandboxes {
		owned[sb.rec.NetNS] = true
	}
	ents, err := os.ReadDir(s.cfg.NetnsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(s.cfg.NetnsDir, e.Name())
		if owned[p] || !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		s.log.Info("removing orphaned network namespace", "path", p)
		if err := removeNetNS(p); err != nil {
			s.log.Error("remove orphaned netns", "path", p, "err", err)
		}
	}
}

// collectGarbage runs CNI GC on the current network with the attachments still owned, so
// that whatever pods that vanished while the shim was down held (addresses, rules, libcni's
// cached results) is released. Plugins or configs older than CNI 1.1 make it a no-op.
func (s *Server) collectGarbage(ctx context.Context) {
	list, _, err := s.cni.network()
	if err != nil {
		s.log.Info("no CNI GC at start: network not ready", "err", err)
		return
	}
	var valid []string
	for _, sb := range s.sandboxes {
		if sb.rec.Network != nil && sb.rec.Network.Attached && sb.rec.Network.Name == list.Name {
			valid = append(valid, sb.rec.ID)
		}
	}
	if err := s.cni.gc(ctx, list, valid); err != nil {
		s.log.Warn("CNI GC", "network", list.Name, "err", err)
		return
	}
	s.log.Info("CNI GC done", "network", list.Name, "validAttachments", len(valid))
}

// Teardown stops and removes every pod recorded in the state dir, then kills any helper
// process left and unmounts the netns dir: the way to leave nothing behind (tests, demos).
func (s *Server) Teardown(ctx context.Context) error {
	var errs []error
	for _, p := range s.listSandboxes(nil) {
		if _, err := s.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", p.Id, err))
		}
	}
	for _, pid := range ProcessesWithArg(s.cfg.StateDir) {
		if ref, err := refOf(pid); err == nil {
			_ = ref.kill()
		}
	}
	if err := UnmountAll(s.cfg.NetnsDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
