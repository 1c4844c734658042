package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/host/containers"
)

func newLogsCmd(state *string) *cobra.Command {
	var follow bool
	var tail int
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "logs APP [-f] [--tail N] [--since D]",
		Short: "Print an app's output (stdout and stderr)",
		Long: `Print what an app wrote to stdout and stderr, oldest first: its rotated log
copies, then the live log (STATE/logs/UUID.log, readable by root only). The
agent caps each log at device.logs.maxSize (default 10Mi) and keeps
device.logs.maxFiles rotated copies (default 3). -f keeps printing what the
app writes, across rotations, until Ctrl-C.

Lines carry no timestamps of their own: containerd's shim writes the app's
output to the file as it comes (no logging process per app, and an app
never blocks on its output). --since D therefore starts at the agent's last
log check at or before D ago (every 30 s by default): it prints everything
written since then, and at most one check interval more. The agent keeps
these marks in memory; for output older than the agent, --since prints all
that is kept and says so.`,
		Example: `  pullwise logs web
  pullwise logs web --tail 50
  pullwise logs web --since 10m
  pullwise logs web -f`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeApps(state),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < -1 {
				return usagef("--tail %d: want a number of lines (-1: all)", tail)
			}
			ctx, cancel := clientContext(cmd)
			st, err := agent.NewClient(*state).Status(ctx)
			cancel()
			if err != nil {
				return err
			}
			one, ok := onlyApp(st, args[0])
			if !ok {
				return fmt.Errorf("no app %q (give its uuid or display name; `pullwise status` lists them)", args[0])
			}
			live := filepath.Join(*state, "logs", one.Info.Apps[0].UUID+".log")
			out := cmd.OutOrStdout()
			files, start := containers.LogFiles(live), int64(0)
			if since > 0 {
				ctx, cancel := clientContext(cmd)
				pos, err := agent.NewClient(*state).LogSince(ctx, one.Info.Apps[0].UUID, time.Now().Add(-since))
				cancel()
				if err != nil {
					return err
				}
				if !pos.Found {
					fmt.Fprintf(cmd.ErrOrStderr(), "pullwise: the agent has no log mark %s old (it marks from its start); printing all that is kept\n", since)
				} else if i := len(files) - 1 - pos.File; i >= 0 {
					files, start = files[i:], pos.Offset
				}
			}
			offset, err := printLogs(out, files, start, tail)
			if err != nil {
				return err
			}
			if !follow {
				return nil
			}
			fctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return followLog(fctx, out, live, offset, 250*time.Millisecond)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until Ctrl-C")
	cmd.Flags().IntVar(&tail, "tail", -1, "print only the last N lines (-1: all)")
	cmd.Flags().DurationVar(&since, "since", 0, "only output written in the last D (to the agent's log check interval)")
	return cmd
}

// printLogs prints the files' content in order, the first from start (the
// last tail lines of it all when tail >= 0), and returns the size of the
// last file read, where -f continues.
func printLogs(out io.Writer, files []string, start int64, tail int) (int64, error) {
	var all []byte
	var offset int64
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return 0, err
		}
		if i == len(files)-1 {
			offset = int64(len(b))
		}
		if i == 0 {
			b = b[min(start, int64(len(b))):]
		}
		all = append(all, b...)
	}
	if tail >= 0 {
		all = lastLines(all, tail)
	}
	_, err := out.Write(all)
	return offset, err
}

// lastLines is the last n lines of b (a final line without a newline
// counts).
func lastLines(b []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(b[:end], '\n')
		if j < 0 {
			return b
		}
		end = j
	}
	return b[end+1:]
}

// followLog prints what is appended to the live log from offset on. A
// rotation (a new LOG.1: the live content copied, then the live log
// emptied) is told by LOG.1's inode changing, not by the size, which may be
// back where it was: the rest of what was being read is then in LOG.1,
// from offset, and the live log starts again at 0. (Two rotations between
// polls lose the older copy's rest: with the default 30 s checks and
// 250 ms polls that takes an app writing two caps' worth in a quarter
// second.)
func followLog(ctx context.Context, out io.Writer, live string, offset int64, every time.Duration) error {
	rotated := inode(live + ".1")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
		if id := inode(live + ".1"); id != rotated {
			rotated = id
			if err := copyFrom(out, live+".1", offset, -1); err != nil && !os.IsNotExist(err) {
				return err
			}
			offset = 0
		}
		fi, err := os.Stat(live)
		if err != nil {
			continue // the app is being rebuilt; its log comes back
		}
		if fi.Size() < offset {
			offset = 0 // emptied by other means (the app purged)
		}
		if fi.Size() > offset {
			if err := copyFrom(out, live, offset, fi.Size()-offset); err != nil {
				return err
			}
			offset = fi.Size()
		}
	}
}

// inode identifies the file at path (0: none).
func inode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// copyFrom copies n bytes (all, when n < 0) of the file at path from
// offset.
func copyFrom(out io.Writer, path string, offset, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	var r io.Reader = bufio.NewReader(f)
	if n >= 0 {
		r = io.LimitReader(r, n)
	}
	_, err = io.Copy(out, r)
	return err
}
