package netfilter

import "os/exec"

var execLookPath = exec.LookPath
