package harness

import (
	"fmt"
	"io"
	"testing"
)

// ProgramTB lets a program (the benchmark) call pkg/testenv helpers that take a
// testing.TB (PluginDir, RefPluginDir): Fatal panics with a FatalError that the program
// recovers with CatchFatal, logs go to Out. Only the methods those helpers use are
// provided; any other panics.
type ProgramTB struct {
	testing.TB
	Out io.Writer
}

// FatalError is what ProgramTB.Fatal panics with.
type FatalError struct{ Msg string }

func (e FatalError) Error() string { return e.Msg }

func (p ProgramTB) Helper()                         {}
func (p ProgramTB) Name() string                    { return "bench" }
func (p ProgramTB) Logf(format string, args ...any) { fmt.Fprintf(p.Out, format+"\n", args...) }
func (p ProgramTB) Fatal(args ...any)               { panic(FatalError{fmt.Sprint(args...)}) }
func (p ProgramTB) Fatalf(format string, args ...any) {
	panic(FatalError{fmt.Sprintf(format, args...)})
}
func (p ProgramTB) Errorf(format string, args ...any) {
	fmt.Fprintf(p.Out, "error: "+format+"\n", args...)
}

// CatchFatal runs fn and turns a ProgramTB.Fatal inside it into an error.
func CatchFatal(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if fe, ok := r.(FatalError); ok {
				err = fe
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}
