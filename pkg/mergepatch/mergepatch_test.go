package mergepatch

import (
	"encoding/json"
	"testing"
)

func TestDiff(t *testing.T) {
	type inner struct {
		A string   `json:"a,omitempty"`
		L []string `json:"l,omitempty"`
	}
	type obj struct {
		X int              `json:"x"`
		M map[string]inner `json:"m,omitempty"`
		P *inner           `json:"p,omitempty"`
	}
	cases := []struct {
		old, cur obj
		want     string
	}{
		{obj{X: 1}, obj{X: 1}, `{}`},
		{obj{X: 1}, obj{X: 2}, `{"x":2}`},
		{obj{M: map[string]inner{"k": {A: "a", L: []string{"1"}}}}, obj{M: map[string]inner{"k": {A: "a", L: []string{"1", "2"}}}}, `{"m":{"k":{"l":["1","2"]}}}`},
		{obj{M: map[string]inner{"k": {A: "a"}, "gone": {}}}, obj{M: map[string]inner{"k": {}}}, `{"m":{"gone":null,"k":{"a":null}}}`},
		{obj{P: &inner{A: "a"}}, obj{}, `{"p":null}`},
	}
	for i, c := range cases {
		d, err := Diff(c.old, c.cur)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(d)
		if string(got) != c.want {
			t.Errorf("case %d: Diff = %s, want %s", i, got, c.want)
		}
	}
}
