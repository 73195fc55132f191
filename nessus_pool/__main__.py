from nessus_pool.cli import main

raise SystemExit(main())
