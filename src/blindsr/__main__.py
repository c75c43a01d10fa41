from blindsr.cli import main

raise SystemExit(main())
