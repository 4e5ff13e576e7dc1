// Package harness is what the benchmark program (test/bench) and the reliability suite
// (test/reliability) share: throwaway network namespaces made without a testing.T, a
// bridge + host-local + portmap conflist, a runtime that drives it through libcni exactly
// as containerd does (from a thread inside the node netns), a node-state snapshot that
// shows what a run left behind, and a counter of the processes the plugins execute.
//
// Nothing here touches the machine's root network namespace: every namespace is made with
// a name starting "cnis-" and every plugin, iptables or nft runs inside the node netns.
package harness
