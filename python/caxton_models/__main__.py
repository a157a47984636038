from caxton_models.cli import main

raise SystemExit(main())
