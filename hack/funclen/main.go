// Command funclen fails when a function outside tests and generated code
// is longer than the house allows (80 lines): long functions are where
// deciding and acting get mixed. make verify-static runs it.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const maxLines = 80

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: funclen DIR...")
		os.Exit(2)
	}
	fset := token.NewFileSet()
	var long []string
	for _, root := range os.Args[1:] {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "generated" || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.HasPrefix(d.Name(), "zz_generated") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				return fmt.Errorf("parsing %s: %w", p, err)
			}
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
				if n := end.Line - start.Line + 1; n > maxLines {
					long = append(long, fmt.Sprintf("%s:%d: %s is %d lines", p, start.Line, fn.Name.Name, n))
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if len(long) > 0 {
		fmt.Fprintf(os.Stderr, "functions over %d lines (cut them by step):\n  %s\n", maxLines, strings.Join(long, "\n  "))
		os.Exit(1)
	}
}
