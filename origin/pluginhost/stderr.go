package pluginhost

import (
	"bytes"
	"io"
	"sync"
)

// stderrFilter copies the plugin's stderr lines to w, except go-plugin's
// own JSON debug and trace lines (the plugin logs with slog as text).
type stderrFilter struct {
	w   io.Writer
	mu  sync.Mutex
	buf []byte
}

// maxLine bounds a buffered line; longer ones are flushed as they are.
const maxLine = 64 << 10

func (f *stderrFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, p...)
	for {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			if len(f.buf) > maxLine {
				_, _ = f.w.Write(f.buf)
				f.buf = f.buf[:0]
			}
			return len(p), nil
		}
		line := f.buf[:i+1]
		if !bytes.HasPrefix(line, []byte(`{"@level":"debug"`)) && !bytes.HasPrefix(line, []byte(`{"@level":"trace"`)) {
			_, _ = f.w.Write(line)
		}
		f.buf = f.buf[i+1:]
	}
}
