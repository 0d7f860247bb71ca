package critest

import "os"

func shortTempDir() (string, error) { return os.MkdirTemp("/tmp", "cri-") }

func removeAll(dir string) { _ = os.RemoveAll(dir) }
