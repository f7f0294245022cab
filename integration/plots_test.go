package integration

import (
	"fmt"
	"image/color"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// series is one named line of a plot.
type series struct {
	name string
	xs   []float64
	ys   []float64
}

var palette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 148, G: 103, B: 189, A: 255},
	color.RGBA{R: 255, G: 127, B: 14, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
	color.RGBA{R: 227, G: 119, B: 194, A: 255}, color.RGBA{R: 23, G: 190, B: 207, A: 255},
}

// savePlot writes a line plot (SVG or PNG by the file's extension).
func savePlot(file, title, xlabel, ylabel string, lines ...series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	for i, s := range lines {
		pts := make(plotter.XYs, len(s.xs))
		for j := range s.xs {
			pts[j] = plotter.XY{X: s.xs[j], Y: s.ys[j]}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", file, err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		if len(pts) <= 12 {
			sc, err := plotter.NewScatter(pts)
			if err == nil {
				sc.Color = l.Color
				p.Add(sc)
			}
		}
		p.Legend.Add(s.name, l)
	}
	p.Legend.Left = true // bottom left: clear of curves that end high on the right
	return p.Save(6*vg.Inch, 4*vg.Inch, file)
}

// cdf turns samples into a CDF series.
func cdf(name string, samples []float64) series {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	out := series{name: name}
	step := max(1, len(s)/400) // at most ~400 points: small SVGs
	for i := 0; i < len(s); i += step {
		out.xs = append(out.xs, s[i])
		out.ys = append(out.ys, float64(i+1)/float64(len(s)))
	}
	if n := len(s); n > 0 && out.xs[len(out.xs)-1] != s[n-1] {
		out.xs, out.ys = append(out.xs, s[n-1]), append(out.ys, 1)
	}
	return out
}
