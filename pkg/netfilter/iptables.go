package netfilter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// The iptables backend: state is read with one `iptables-save -t nat` and written with one
// `iptables-restore --noflush` transaction per IP family. Rules are kept as the text that
// iptables-save prints after "-A <chain> ", so the reference's rules and ours compare as strings.
//
// Two traps shape every transaction (DESIGN.md): declaring an existing chain (":X - [0:0]")
// in a --noflush restore flushes it, so chains are only made with -N when they are absent;
// a -D of a missing rule fails the whole transaction, so deletions name rules read from state.
//
// Most verbs first try an optimistic transaction that needs no state read: it asserts what
// it assumes (-N of a chain that must not exist yet, jumps to chains that must exist, -D of
// the exact rules ADD wrote) and so fails as a whole when the assumption is wrong; then the
// verb reads the table and writes the difference. In the common case a verb costs one restore
// per family. -C is kept off the common ADD path: with it iptables-nft fetches every rule of
// the table, so its cost grows with the number of pods.

// execs counts the iptables programs this process ran (for tests and benchmarks).
var execs atomic.Int64

// Execs returns how many iptables programs the engine has run in this process.
func Execs() int64 { return execs.Load() }

// table is one family's nat table as iptables-save prints it.
type table struct {
	chains map[string]bool
	rules  map[string][]string // chain -> rule specs in order, without "-A <chain> "
}

// has tells whether the chain exists; the nat table's built-in chains always do (iptables-nft
// makes them, and the table, on first use).
func (t *table) has(chain string) bool { return t.chains[chain] || builtin[chain] }

var builtin = map[string]bool{"PREROUTING": true, "INPUT": true, "OUTPUT": true, "POSTROUTING": true}

// rule is a parsed rule spec: its comment and jump target.
type rule struct {
	spec, comment, target string
}

func (t *table) parsed(chain string) []rule {
	var out []rule
	for _, s := range t.rules[chain] {
		out = append(out, parseRule(s))
	}
	return out
}

func (t *table) hasRule(chain, spec string) bool {
	for _, s := range t.rules[chain] {
		if s == spec {
			return true
		}
	}
	return false
}

// parseSave reads iptables-save output of the nat table.
func parseSave(out string) *table {
	t := &table{chains: map[string]bool{}, rules: map[string][]string{}}
	inNat := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case !inNat:
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 {
				t.chains[f[0]] = true
			}
		case strings.HasPrefix(line, "-A "):
			rest := line[3:]
			chain, spec, _ := strings.Cut(rest, " ")
			t.chains[chain] = true
			t.rules[chain] = append(t.rules[chain], spec)
		}
	}
	return t
}

// tokens splits a rule spec as iptables-restore does: on spaces, with double-quoted strings
// whose backslash escapes are undone.
func tokens(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func parseRule(spec string) rule {
	r := rule{spec: spec}
	tk := tokens(spec)
	for i := 0; i+1 < len(tk); i++ {
		switch tk[i] {
		case "--comment":
			r.comment = tk[i+1]
		case "-j", "-g":
			r.target = tk[i+1]
		}
	}
	return r
}

// quote renders a string argument the way iptables-save does (xtables_save_string): bare when
// it is only letters, digits, '-' and '_', else double-quoted with '"', '\' and '\” escaped.
func quote(s string) string {
	bare := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' || s[i] == '\'' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// tx is one iptables-restore --noflush transaction on the nat table.
type tx struct {
	lines []string
	what  []string // per line, what it means, for error messages
	// gate, for an optimistic transaction: the one line whose failure means "try the next
	// optimistic transaction"; a failure anywhere else goes straight to reading state.
	gate string
}

func (t *tx) add(what, line string) { t.lines = append(t.lines, line); t.what = append(t.what, what) }

func (t *tx) newChain(c string)         { t.add("create chain "+c, "-N "+c) }
func (t *tx) appendRule(c, spec string) { t.add("add rule", "-A "+c+" "+spec) }
func (t *tx) insertRule(c, spec string) { t.add("add rule", "-I "+c+" 1 "+spec) }
func (t *tx) deleteRule(c, spec string) { t.add("delete rule", "-D "+c+" "+spec) }
func (t *tx) checkRule(c, spec string)  { t.add("rule", "-C "+c+" "+spec) }
func (t *tx) deleteChain(c string) {
	t.add("flush chain "+c, "-F "+c)
	t.add("delete chain "+c, "-X "+c)
}
func (t *tx) empty() bool  { return t == nil || len(t.lines) == 0 }
func (t *tx) merge(o *tx)  { t.lines = append(t.lines, o.lines...); t.what = append(t.what, o.what...) }
func (t *tx) text() string { return "*nat\n" + strings.Join(t.lines, "\n") + "\nCOMMIT\n" }
func (t *tx) lineOf(n int) (string, string) {
	// Line 1 of the restore input is "*nat".
	if n >= 2 && n-2 < len(t.lines) {
		return t.what[n-2], t.lines[n-2]
	}
	return "", ""
}

// ipt runs one family's iptables programs in the caller's network namespace.
type ipt struct{ fam Family }

func (x ipt) prog(suffix string) string {
	if x.fam == IPv6 {
		return "ip6tables" + suffix
	}
	return "iptables" + suffix
}

// save reads the nat table (one program run).
func (x ipt) save() (*table, error) {
	execs.Add(1)
	cmd := exec.Command(x.prog("-save"), "-t", "nat")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -t nat: %w: %s", x.prog("-save"), err, strings.TrimSpace(errb.String()))
	}
	return parseSave(out.String()), nil
}

// restoreError is a failed transaction: the line that failed and what it meant.
type restoreError struct {
	prog, what, line, msg string
}

func (e *restoreError) Error() string {
	if e.line != "" {
		return fmt.Sprintf("%s: %s failed (%q): %s", e.prog, e.what, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.prog, e.msg)
}

var failedLineRE = regexp.MustCompile(`line (\d+) failed|Error occurred at line: (\d+)`)

// restore writes one transaction (one program run); all of it applies or none.
func (x ipt) restore(t *tx) error {
	execs.Add(1)
	cmd := exec.Command(x.prog("-restore"), "-w", "--noflush")
	cmd.Stdin = strings.NewReader(t.text())
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &errb, &errb
	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(errb.String())
	if msg == "" {
		msg = err.Error()
	}
	re := &restoreError{prog: x.prog("-restore"), msg: msg}
	if m := failedLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1] + m[2])
		re.what, re.line = t.lineOf(n)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("%s: %w", x.prog("-restore"), err)
	}
	return re
}

// usableFamilies are the families whose iptables programs are installed and whose IP stack
// exists in this network namespace (no program is run to find out).
func usableFamilies() []Family {
	var out []Family
	for _, f := range []Family{IPv4, IPv6} {
		x := ipt{f}
		if _, err := exec.LookPath(x.prog("-restore")); err != nil {
			continue
		}
		if f == IPv6 {
			if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
				continue
			}
		}
		out = append(out, f)
	}
	return out
}

// maxAttempts bounds read-and-write rounds lost to concurrent writers.
const maxAttempts = 4

// apply makes the table what plan wants. The optimistic transactions, when not empty, are
// tried first in order, without reading state; when each fails (its assumptions did not hold),
// the table is read and plan's difference written, again after a concurrent change made the
// write fail.
func (x ipt) apply(plan func(*table) (*tx, error), fast ...*tx) error {
	for _, f := range fast {
		if f.empty() {
			continue
		}
		err := x.restore(f)
		if err == nil {
			return nil
		}
		var re *restoreError
		if f.gate != "" && (!errors.As(err, &re) || re.line != f.gate) {
			break
		}
	}
	// Writers on this path serialise on a lock file: iptables-nft-restore retries a
	// transaction that lost a race against another writer without checking its -N again, so
	// two writers that both read "no CNI-HOSTPORT-DNAT" would both make it and its rules.
	unlock := lockFamily(x.fam)
	defer unlock()
	var last error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		st, err := x.save()
		if err != nil {
			return err
		}
		t, err := plan(st)
		if err != nil || t.empty() {
			return err
		}
		if last = x.restore(t); last == nil {
			return nil
		}
	}
	return last
}

// LockDir holds the engine's lock files (one per family), shared by every plugin process.
var LockDir = "/run/cni-suite"

// lockFamily takes the family's lock file; without a writable LockDir it goes on unlocked.
func lockFamily(f Family) (unlock func()) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return func() {}
	}
	fd, err := os.OpenFile(filepath.Join(LockDir, fmt.Sprintf("iptables-nat-ipv%d.lock", int(f))), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return func() {}
	}
	for {
		err = syscall.Flock(int(fd.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		fd.Close()
		return func() {}
	}
	return func() { fd.Close() }
}

// absent is a transaction that succeeds, changing nothing, exactly when the chain does not
// exist: then nothing can jump to it either, and a teardown has nothing to do.
func absent(chain string) *tx {
	t := &tx{}
	t.newChain(chain)
	t.add("delete chain "+chain, "-X "+chain)
	return t
}
