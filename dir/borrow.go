package dir

import "github.com/caplin-dev/caplin/dir/internal/borrow"

func init() {
	borrow.Install(func(d any, op string, f func(fd int) error) error {
		dd, _ := d.(*Dir)
		fd, err := dd.begin(op, ".", 0)
		if err != nil {
			return err
		}
		defer dd.fd.release()
		return f(fd)
	})
}
