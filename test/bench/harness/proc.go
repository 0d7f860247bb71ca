package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user+system CPU time a process has used.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of process %d: %w", pid, err)
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("process %d: short /proc stat line", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("process %d: unreadable CPU times in /proc stat", pid)
	}
	return (utime + stime) / clockTicks, nil
}

// Memory is a process's peak resident set and its proportional set size
// now, in bytes, with the PSS split into anonymous memory (heap, stacks)
// and file pages (mostly the binary's own code, which processes running
// the same binary share).
type Memory struct{ PeakRSS, PSS, PSSAnon, PSSFile int64 }

func memory(pid int) (Memory, error) {
	var m Memory
	var err error
	if m.PeakRSS, err = procField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM:"); err != nil {
		return m, err
	}
	rollup := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
	if m.PSS, err = procField(rollup, "Pss:"); err != nil {
		return m, err
	}
	if m.PSSAnon, err = procField(rollup, "Pss_Anon:"); err != nil {
		return m, err
	}
	if m.PSSFile, err = procField(rollup, "Pss_File:"); err != nil {
		return m, err
	}
	return m, nil
}

// procField reads a "Name:   123 kB" line of a /proc file, in bytes.
func procField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == name {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %q: %w", path, name, fields[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s line", path, name)
}

// machine describes this machine for the report.
func machine() string {
	model, cores := "unknown CPU", 0
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				switch strings.TrimSpace(k) {
				case "model name":
					model = strings.TrimSpace(v)
				case "processor":
					cores++
				}
			}
		}
	}
	mem, _ := procField("/proc/meminfo", "MemTotal:")
	return fmt.Sprintf("%s, %d cores, %.1f GiB", model, cores, float64(mem)/(1<<30))
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
