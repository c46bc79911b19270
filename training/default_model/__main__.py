from training.default_model.recipe import main

raise SystemExit(main())
