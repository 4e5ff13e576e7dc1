package crishim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// On-disk layout under --state-dir (all JSON, written atomically):
//
//	sandboxes/<id>/sandbox.json    sandboxRecord
//	sandboxes/<id>/pause.json      what the infra process sets up (hostname, resolv.conf, /proc)
//	sandboxes/<id>/{hostname,resolv.conf,pause.log}
//	containers/<id>/container.json containerRecord
//	containers/<id>/spec.json      what the container monitor runs
//	containers/<id>/started.json   written by the monitor once the process runs
//	containers/<id>/exit.json      written by the monitor when the process has exited
//	images.json                    recorded image names
//	cni-cache/                     libcni's result cache (what DEL and GC read)

const (
	sandboxesDir  = "sandboxes"
	containersDir = "containers"
)

// Sandbox states as recorded. "creating" is written before any namespace or network is made,
// so that a shim killed half way through RunPodSandbox finds and undoes it at the next start.
const (
	sbCreating = "creating"
	sbReady    = "ready"
	sbStopped  = "stopped"
)

type sandboxRecord struct {
	ID             string          `json:"id"`
	State          string          `json:"state"`
	CreatedAt      int64           `json:"createdAt"`
	RuntimeHandler string          `json:"runtimeHandler,omitempty"`
	Config         json.RawMessage `json:"config"`
	NetNS          string          `json:"netns,omitempty"` // pinned netns path; empty for host network
	Pause          procRef         `json:"pause"`
	Network        *networkRecord  `json:"network,omitempty"`
}

// networkRecord is what the shim needs to undo the pod's network: the exact config list that
// was used for ADD (DEL must use it even when the conf dir changed since) and whether ADD ran.
type networkRecord struct {
	Name     string          `json:"name"`
	ConfList json.RawMessage `json:"confList"`
	Attached bool            `json:"attached"`
	IPs      []string        `json:"ips,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
}

type containerRecord struct {
	ID          string          `json:"id"`
	SandboxID   string          `json:"sandboxId"`
	CreatedAt   int64           `json:"createdAt"`
	Config      json.RawMessage `json:"config"`
	ImageRef    string          `json:"imageRef"`
	LogPath     string          `json:"logPath,omitempty"`
	Monitor     procRef         `json:"monitor"`
	StartFailed string          `json:"startFailed,omitempty"` // message when the start failed
	FinishedAt  int64           `json:"finishedAt,omitempty"`  // set with StartFailed
}

// containerSpec is what the monitor process reads to run the container.
type containerSpec struct {
	Args      []string `json:"args"`
	Env       []string `json:"env"`
	Cwd       string   `json:"cwd"`
	LogPath   string   `json:"logPath,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
	StdinOnce bool     `json:"stdinOnce,omitempty"`
	NewPIDNS  bool     `json:"newPidns,omitempty"`
	// Namespaces lists the kinds of the namespace files passed as extra files 4, 5, ...
	Namespaces []string `json:"namespaces"`
	// AttachSocket is the abstract unix socket name the monitor serves attach on.
	AttachSocket string `json:"attachSocket"`
}

type startedRecord struct {
	Proc      procRef `json:"proc"`
	StartedAt int64   `json:"startedAt"`
}

type exitRecord struct {
	ExitCode   int32  `json:"exitCode"`
	FinishedAt int64  `json:"finishedAt"`
	Reason     string `json:"reason"`
	Message    string `json:"message,omitempty"`
}

// pauseSpec is what the infra process sets up inside the pod's new namespaces.
type pauseSpec struct {
	Hostname   string `json:"hostname,omitempty"`     // set when the pod has its own UTS namespace
	HostsFile  string `json:"hostnameFile,omitempty"` // bind-mounted on /etc/hostname
	ResolvConf string `json:"resolvConf,omitempty"`   // bind-mounted on /etc/resolv.conf
	MountProc  bool   `json:"mountProc,omitempty"`    // own PID namespace: mount a matching /proc
}

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// writeJSON writes v to path atomically (temp file, fsync, rename).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func marshalProto(m proto.Message) json.RawMessage {
	b, err := protojson.Marshal(m)
	if err != nil {
		panic(err) // only fails on invalid UTF-8 in strings, which gRPC already refused
	}
	return b
}

func unmarshalProto(b []byte, m proto.Message) error {
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, m)
}
