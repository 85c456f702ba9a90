from motifpipe.cli import main

raise SystemExit(main())
