package plugin

import (
	"strconv"
	"strings"
)

// screen is as much of a VT100 as the live view uses, to read the final
// screen a terminal of a given width shows after the plugin's bytes: text
// that wraps at the last column, carriage return, line feed, cursor up
// (CSI n A), erase line (CSI 2 K, CSI K) and erase below (CSI J). The rows
// grow as needed: the test's frames are far shorter than a terminal.
type screen struct {
	width int
	rows  [][]rune
	r, c  int
}

func newScreen(width int) *screen { return &screen{width: width, rows: [][]rune{nil}} }

func (s *screen) row() []rune {
	for len(s.rows) <= s.r {
		s.rows = append(s.rows, nil)
	}
	return s.rows[s.r]
}

func (s *screen) put(ch rune) {
	if s.c >= s.width {
		// The cursor sat past the last column: the terminal wraps now.
		s.r, s.c = s.r+1, 0
	}
	row := s.row()
	for len(row) <= s.c {
		row = append(row, ' ')
	}
	row[s.c] = ch
	s.rows[s.r] = row
	s.c++
}

func (s *screen) feed(text string) {
	in := []rune(text)
	for i := 0; i < len(in); i++ {
		switch ch := in[i]; {
		case ch == '\r':
			s.c = 0
		case ch == '\n':
			s.r++
			s.row()
		case ch == 0x1b && i+1 < len(in) && in[i+1] == '[':
			j := i + 2
			for j < len(in) && (in[j] >= '0' && in[j] <= '9' || in[j] == ';' || in[j] == '?') {
				j++
			}
			if j == len(in) {
				return
			}
			s.csi(string(in[i+2:j]), in[j])
			i = j
		case ch < 0x20:
		default:
			s.put(ch)
		}
	}
}

func (s *screen) csi(params string, final rune) {
	n, err := strconv.Atoi(params)
	if err != nil {
		n = 0
	}
	switch final {
	case 'A':
		s.r = max(0, s.r-max(n, 1))
		s.c = min(s.c, s.width-1)
	case 'K':
		row := s.row()
		switch n {
		case 2:
			s.rows[s.r] = nil
		case 0:
			if s.c < len(row) {
				s.rows[s.r] = row[:s.c]
			}
		}
	case 'J':
		if n == 0 {
			if row := s.row(); s.c < len(row) {
				s.rows[s.r] = row[:s.c]
			}
			s.rows = s.rows[:s.r+1]
		}
	}
}

// lines is the screen's text, each row without trailing blanks, without
// the empty rows at the end.
func (s *screen) lines() []string {
	var out []string
	for _, r := range s.rows {
		out = append(out, strings.TrimRight(string(r), " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}
