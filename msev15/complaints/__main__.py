from msev15.complaints.cli import main

raise SystemExit(main())
