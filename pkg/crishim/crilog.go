package crishim

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxLogLine is the longest line written as one CRI log record; longer lines are split into
// partial ("P") records, as containerd does.
const maxLogLine = 16 * 1024

// criLog writes a container's output in the CRI log format that kubelet and crictl read:
//
//	<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <content>\n
type criLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
	now  func() time.Time
}

func openCRILog(path string) (*criLog, error) {
	l := &criLog{path: path, now: time.Now}
	if err := l.reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// reopen opens the log path again (after kubelet rotated the file away).
func (l *criLog) reopen() error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *criLog) record(stream string, partial bool, content []byte) {
	tag := "F"
	if partial {
		tag = "P"
	}
	var b bytes.Buffer
	b.Grow(len(content) + 48)
	b.WriteString(l.now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(content)
	b.WriteByte('\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.Write(b.Bytes())
	}
}

func (l *criLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// lineSplitter turns a stream's chunks into log records: one full record per line, partial
// records for lines longer than maxLogLine, and the unterminated rest as a full record at the end.
type lineSplitter struct {
	stream string
	log    *criLog
	buf    []byte
}

func (s *lineSplitter) write(p []byte) {
	if s.log == nil {
		return
	}
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		for len(s.buf[:i]) > maxLogLine {
			s.log.record(s.stream, true, s.buf[:maxLogLine])
			s.buf = s.buf[maxLogLine:]
			i -= maxLogLine
		}
		s.log.record(s.stream, false, s.buf[:i])
		s.buf = s.buf[i+1:]
	}
	for len(s.buf) > maxLogLine {
		s.log.record(s.stream, true, s.buf[:maxLogLine])
		s.buf = s.buf[maxLogLine:]
	}
	if len(s.buf) == 0 {
		s.buf = nil
	}
}

func (s *lineSplitter) flush() {
	if s.log != nil && len(s.buf) > 0 {
		s.log.record(s.stream, false, s.buf)
	}
	s.buf = nil
}
