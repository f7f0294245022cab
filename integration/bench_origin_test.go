package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// procSample reads a process's CPU time and RSS from /proc.
type procSample struct {
	cpu time.Duration
	rss int64 // bytes
	at  time.Time
}

func sampleProc(t *testing.T, pid int) procSample {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// Fields after the command name (which is in parentheses).
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	var rssKB int64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	const clkTck = 100 // USER_HZ on Linux
	return procSample{cpu: time.Duration(utime+stime) * time.Second / clkTck, rss: rssKB << 10, at: time.Now()}
}

func cpuShare(a, b procSample) float64 {
	return float64(b.cpu-a.cpu) / float64(b.at.Sub(a.at))
}

// rtspReader is a gortsplib client counting received RTP packets.
func rtspReader(t *testing.T, url string, packets *atomic.Int64) *gortsplib.Client {
	t.Helper()
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp}
	u, err := base.ParseURL(url)
	require.NoError(t, err)
	require.NoError(t, c.Start(u.Scheme, u.Host))
	desc, _, err := c.Describe(u)
	require.NoError(t, err)
	require.NoError(t, c.SetupAll(desc.BaseURL, desc.Medias))
	c.OnPacketRTPAny(func(_ *description.Media, _ format.Format, _ *rtp.Packet) { packets.Add(1) })
	_, err = c.Play(nil)
	require.NoError(t, err)
	return c
}

// TestBenchOriginFanout measures the origin's CPU and memory per RTSP
// reader: ingest of a 1280x720 x264 stream, fan-out to 0 and then N
// readers over loopback. It runs under `make bench` (COOP_BENCH=1) and
// writes bench/results/origin-fanout.{json,md}; medians of 3 windows.
func TestBenchOriginFanout(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	requireTool(t, "ffmpeg")
	readers := 100
	if v, err := strconv.Atoi(os.Getenv("COOP_BENCH_READERS")); err == nil {
		readers = v
	}
	o := startOrigin(t)
	publishRTMP(t, o.rtmpURL("bench"), 120*time.Second, "1280x720", "-bf", "3", "-g", "60", "-b:v", "2500k")
	o.waitPublishing(t, "live/bench")
	pid := o.cmd.Process.Pid
	const window = 8 * time.Second
	measure := func() (cpu []float64, rss []int64) {
		for i := 0; i < 3; i++ {
			a := sampleProc(t, pid)
			time.Sleep(window)
			b := sampleProc(t, pid)
			cpu = append(cpu, cpuShare(a, b))
			rss = append(rss, b.rss)
		}
		return cpu, rss
	}
	idleCPU, idleRSS := measure()

	var packets atomic.Int64
	var clients []*gortsplib.Client
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := rtspReader(t, o.rtspURL("bench"), &packets)
			mu.Lock()
			clients = append(clients, c)
			mu.Unlock()
		}()
		if i%10 == 9 {
			wg.Wait()
		}
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	time.Sleep(2 * time.Second)
	p0 := packets.Load()
	loadCPU, loadRSS := measure()
	pps := float64(packets.Load()-p0) / (3 * window.Seconds())

	res := map[string]any{
		"readers":                    readers,
		"stream":                     "1280x720 30fps x264 -bf 3 -g 60 2.5 Mbit/s + AAC, RTMP in, RTSP/TCP out",
		"idleCPUShareMedian":         median(idleCPU),
		"loadCPUShareMedian":         median(loadCPU),
		"cpuPercentPerReader":        100 * (median(loadCPU) - median(idleCPU)) / float64(readers),
		"idleRSSBytesMedian":         medianInt(idleRSS),
		"loadRSSBytesMedian":         medianInt(loadRSS),
		"rssBytesPerReader":          float64(medianInt(loadRSS)-medianInt(idleRSS)) / float64(readers),
		"packetsPerSecondAllReaders": pps,
		"windows":                    3,
		"windowSeconds":              window.Seconds(),
	}
	t.Logf("%+v", res)
	dir := filepath.Join("..", "bench", "results")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b, _ := json.MarshalIndent(res, "", "  ")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "origin-fanout.json"), b, 0o644))
	md := fmt.Sprintf("| readers | origin CPU idle | origin CPU loaded | CPU per reader | RSS idle | RSS loaded | RSS per reader |\n"+
		"|---|---|---|---|---|---|---|\n| %d | %.1f%% | %.1f%% | %.3f%% of a core | %.1f MiB | %.1f MiB | %.0f KiB |\n",
		readers, 100*median(idleCPU), 100*median(loadCPU), res["cpuPercentPerReader"],
		float64(medianInt(idleRSS))/(1<<20), float64(medianInt(loadRSS))/(1<<20), res["rssBytesPerReader"].(float64)/1024)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "origin-fanout.md"), []byte(md), 0o644))
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func medianInt(v []int64) int64 {
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
